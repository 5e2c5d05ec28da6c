// What both roles share: the kernel twin's verdicts and stage, and learning and resolving
// the tunnel peer's MAC by ARP.
#pragma once

#include <cstring>

#include <rte_arp.h>
#include <rte_ether.h>

#include "dataplane/worker.hpp"

namespace ztg {

// To the receiving port's kernel twin, unchanged; dropped and counted if it has none.
inline Verdict to_twin(const WorkerCtx& ctx, uint16_t dev) {
    const uint16_t twin = ctx.shared->topo->devs[dev].peer;
    return twin == kNoDev ? dropped(Ctr::drop_no_twin) : Verdict{Ctr::pass, twin};
}

// The same, counted as c (a verdict that ends at the kernel).
inline Verdict to_twin_as(const WorkerCtx& ctx, uint16_t dev, Ctr c) {
    const Verdict v = to_twin(ctx, dev);
    return v.out == kNoDev ? v : Verdict{c, v.out};
}

// Stage of a kernel twin, in every role: what the kernel sends goes out of its port as it is.
void from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);

// The ARP header of m if it is an Ethernet/IPv4 ARP request or reply (untagged).
inline const rte_arp_hdr* arp_of(const rte_mbuf* m) {
    if (m->data_len < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return nullptr;
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return nullptr;
    const auto* arp = reinterpret_cast<const rte_arp_hdr*>(eth + 1);
    if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
        arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
        arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)
        return nullptr;
    return arp;
}

inline Ip4 arp_sender_ip(const rte_arp_hdr* arp) {
    Ip4 ip;
    std::memcpy(&ip.raw, &arp->arp_data.arp_sip, 4);
    return ip;
}

// On the tunnel link: ARP from the peer (re)teaches us its MAC, e.g. after it restarts.
inline void snoop_peer_arp(WorkerCtx& ctx, const rte_mbuf* m) {
    const Snapshot& s = *ctx.snap;
    const rte_arp_hdr* arp = arp_of(m);
    // A static next hop (tunnel.next_hop_mac) is never re-learned.
    if (s.arp_refresh_ms == 0 || arp == nullptr || arp_sender_ip(arp) != s.remote_ip) return;
    if (s.nexthop_known && rte_is_same_ether_addr(&arp->arp_data.arp_sha, &s.nexthop_mac)) return;
    ctx.post(Event{Event::Kind::NextHopMac, s.remote_ip, arp->arp_data.arp_sha, kNoDev});
}

// Worker 0, once per poll round: while the peer's MAC is unknown, ask for it once a second.
void resolve_peer_tick(WorkerCtx& ctx);

} // namespace ztg
