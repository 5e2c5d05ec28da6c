// The immutable per-generation configuration the workers read: published by the control
// thread through one atomic pointer, read once per poll round, freed after a QSBR grace
// period. Everything a worker needs to classify and encapsulate is here, precomputed.
#pragma once

#include <array>
#include <cstdint>

#include <rte_ether.h>

#include "dataplane/geneve.hpp"
#include "dataplane/net.hpp"

namespace ztg {

struct Snapshot {
    EncapTemplate tmpl;               // outer headers toward the ztunnel next hop
    Ip4 ztunnel_ip;                   // tunnel remote; pod -> this IP goes direct
    Ip4 local_ip;                     // tunnel local (outer source)
    std::array<uint64_t, 4> protocols{}; // bit p set: IPv4 protocol p is redirected
    uint16_t max_inner_len = 1450;    // largest inner IPv4 packet: tunnel MTU - 50
    bool nexthop_known = false;
    rte_ether_addr nexthop_mac{};     // the ztunnel's MAC (outer/direct destination)
    rte_ether_addr ztunnel_port_mac{}; // our MAC on the ztunnel link (outer source)
    uint64_t generation = 0;

    bool redirects(uint8_t proto) const { return (protocols[proto >> 6] >> (proto & 63)) & 1; }
    void set_redirect(uint8_t proto) { protocols[proto >> 6] |= uint64_t(1) << (proto & 63); }
};

} // namespace ztg
