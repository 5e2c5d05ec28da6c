// The immutable per-generation configuration the workers read: published by the control
// thread through one atomic pointer, read once per poll round, freed after a QSBR grace
// period. Everything a worker needs to classify and encapsulate is here, precomputed.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <rte_ether.h>

#include "dataplane/decap.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/net.hpp"

namespace ztg {

struct Snapshot {
    EncapTemplate tmpl;                  // outer headers toward the tunnel peer's next hop
    Ip4 remote_ip;                       // tunnel peer (node: ztunnel; pod -> it goes direct)
    Ip4 local_ip;                        // tunnel local (outer source)
    DecapParams decap;                   // what tunnel traffic from the peer looks like
    uint32_t vni = 1001;                 // node: the one VNI served in both directions
    Ip4 inner_ip;                        // node: istioout's address, answered for inside the tunnel
    std::array<uint64_t, 4> protocols{}; // bit p set: IPv4 protocol p is redirected
    uint16_t max_inner_len = 1450;       // largest inner IPv4 packet: tunnel MTU - 50
    bool fragment = true;                // node: split a larger one without DF (else drop)
    bool nexthop_known = false;
    uint32_t arp_refresh_ms = 0;            // 0: static next hop, never ARP
    rte_ether_addr nexthop_mac{};           // the peer's MAC (outer/direct destination)
    rte_ether_addr link_mac{};              // our MAC on the tunnel link (outer source)
    rte_ether_addr inner_mac{};             // node: istioout's MAC
    std::vector<EncapTemplate> tunnel_tmpl; // endpoint: [device] template of a tunnel tap's VNI
    uint64_t generation = 0;

    bool redirects(uint8_t proto) const { return (protocols[proto >> 6] >> (proto & 63)) & 1; }
    void set_redirect(uint8_t proto) { protocols[proto >> 6] |= uint64_t(1) << (proto & 63); }
};

} // namespace ztg
