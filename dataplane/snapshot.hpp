// The immutable per-generation configuration the workers read: published by the control
// thread through one atomic pointer, read once per poll round, freed after a QSBR grace
// period. Everything a worker needs to classify and encapsulate is here, precomputed.
#pragma once

#include <array>
#include <cstdint>

#include <rte_ether.h>

#include "dataplane/decap.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/net.hpp"
#include "dataplane/port_kind.hpp"

namespace ztg {

// One Geneve tunnel to the peer: its VNI, the headers pushed for it and what rides inside.
// Node: istioout (VNI 1001); endpoint: one per tunnel tap (pistioout, pistioin, ...).
struct TunnelEntry {
    uint32_t vni = 0;
    uint16_t dev = kNoDev; // endpoint: the tap carrying it; node: none (delivered by address)
    EncapTemplate tmpl;    // outer headers toward the peer (node: and the inner Ethernet header)
    rte_ether_addr inner_src{}, inner_dst{}; // node: istioout's and pistioout's MACs
    Ip4 inner_ip; // node: the tunnel device's own address, answered for in ARP inside it
};
constexpr size_t kMaxTunnels = 8;

struct Snapshot {
    // The tunnels, in a fixed array so the fast path reads them at a constant offset.
    // Node: tunnels[0] is the outbound one (istioout). Endpoint: one per tunnel tap.
    std::array<TunnelEntry, kMaxTunnels> tunnels{};
    uint8_t ntunnels = 0;
    Ip4 remote_ip;                       // tunnel peer (node: ztunnel; pod -> it goes direct)
    Ip4 local_ip;                        // tunnel local (outer source)
    DecapParams decap;                   // what tunnel traffic from the peer looks like
    std::array<uint64_t, 4> protocols{}; // bit p set: IPv4 protocol p is redirected
    uint16_t max_inner_len = 1450;       // largest inner IPv4 packet: tunnel MTU - 50
    bool fragment = true;                // node: split a larger one without DF (else drop)
    bool nexthop_known = false;
    uint32_t arp_refresh_ms = 0;  // 0: static next hop, never ARP
    rte_ether_addr nexthop_mac{}; // the peer's MAC (outer/direct destination)
    rte_ether_addr link_mac{};    // our MAC on the tunnel link (outer source)
    uint64_t generation = 0;
    // Node, inbound configured: tunnels[1] is istioin (VNI 1000); the protocols sent into it.
    bool inbound = false;
    std::array<uint64_t, 4> inbound_protocols{};
    // Node, inbound.dns_capture: a meshed pod's UDP/53 goes to ZT_IP:15053, its answers back.
    bool dns_capture = false;

    bool redirects(uint8_t proto) const { return (protocols[proto >> 6] >> (proto & 63)) & 1; }
    void set_redirect(uint8_t proto) { protocols[proto >> 6] |= uint64_t(1) << (proto & 63); }
    bool redirects_inbound(uint8_t proto) const {
        return (inbound_protocols[proto >> 6] >> (proto & 63)) & 1;
    }

    // Node: where a meshed pod's redirected packets go.
    const TunnelEntry& outbound() const { return tunnels[0]; }
    // Node, inbound: where traffic to a meshed pod goes (istioin).
    const TunnelEntry& inbound_tunnel() const { return tunnels[1]; }
    // The tunnel of a VNI, or of an endpoint's tap; nullptr if none.
    const TunnelEntry* by_vni(uint32_t vni) const {
        for (uint8_t i = 0; i < ntunnels; i++)
            if (tunnels[i].vni == vni) return &tunnels[i];
        return nullptr;
    }
    const TunnelEntry* by_dev(uint16_t dev) const {
        for (uint8_t i = 0; i < ntunnels; i++)
            if (tunnels[i].dev == dev) return &tunnels[i];
        return nullptr;
    }
    // Adds one (the config allows at most kMaxTunnels); false if full.
    bool add_tunnel(const TunnelEntry& t) {
        if (ntunnels == kMaxTunnels) return false;
        tunnels[ntunnels++] = t;
        return true;
    }
};

} // namespace ztg
