// Parse stage: Ethernet, one optional 802.1Q tag, IPv4. Reads only bytes that are in the
// first segment; anything it cannot vouch for is marked not-IPv4 and never redirected.
#pragma once

#include <cstdint>

#include <rte_mbuf.h>

#include "dataplane/net.hpp"

namespace ztg {

struct Parsed {
    uint16_t l3_off = 0; // bytes of Ethernet (+VLAN) before the IPv4 header
    uint16_t ip_len = 0; // IPv4 total length (trusted: checked against the frame)
    uint8_t proto = 0;   // IPv4 protocol
    uint8_t tos = 0;     // DSCP + ECN
    bool ipv4 = false;   // a well-formed IPv4 header that fits in the frame
    bool fragment = false;
    Ip4 src, dst;
    Be16 sport, dport; // TCP/UDP/SCTP ports of a first fragment, else 0
};

// Parses the frame in m (first segment only). Never reads past data_len.
Parsed parse_frame(const rte_mbuf* m);

} // namespace ztg
