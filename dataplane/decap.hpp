// Geneve decapsulation (RFC 8926) with RFC 6040 ECN on egress of the tunnel. The checks
// are a pure function of the frame so that the fuzzer and the tests can drive them alone.
#pragma once

#include <cstdint>

#include <rte_mbuf.h>

#include "dataplane/counters.hpp"
#include "dataplane/net.hpp"
#include "dataplane/parse.hpp"

namespace ztg {

// What a frame arriving on the tunnel link is.
enum class Tunnel : uint8_t {
    NotOurs, // not UDP to our address and port from the tunnel peer: the kernel's business
    Ok,      // valid Geneve for us: decapsulate
    Drop,    // ours, but invalid: dropped and counted under `reason`
};

struct DecapParams {
    Ip4 local, remote; // outer destination and source we accept
    uint16_t udp_port = 6081;
};

struct GeneveView {
    Tunnel verdict = Tunnel::NotOurs;
    Ctr reason = Ctr::rx;   // for Drop
    uint16_t inner_off = 0; // offset of the inner Ethernet header
    uint16_t outer_end = 0; // just past the outer IPv4 datagram: where the inner frame ends
    uint32_t vni = 0;
    uint8_t outer_ecn = 0;
};

// Classifies and validates the frame in m (Ethernet [+VLAN] / IPv4 / UDP / Geneve), whose
// Ethernet and IPv4 headers parse_frame found at p (valid or not: a malformed outer header
// of a frame that claims to be ours is a counted drop). Reads only the first segment.
GeneveView inspect_geneve(const rte_mbuf* m, const Parsed& p, const DecapParams& params);
inline GeneveView inspect_geneve(const rte_mbuf* m, const DecapParams& params) {
    return inspect_geneve(m, parse_frame(m), params);
}

// RFC 6040 §4.2 on the inner IPv4 header at ip (the caller checked it is IPv4 and whole):
// returns false when the packet must be dropped (outer CE over a Not-ECT inner packet);
// otherwise updates the inner ECN field and checksum as needed.
bool ecn_decapsulate(uint8_t outer_ecn, uint8_t* ip);

} // namespace ztg
