#include "pipelines/common.hpp"

#include <rte_cycles.h>

namespace ztg {

void from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const uint16_t port = ctx.shared->topo->devs[dev].peer;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) ctx.dispose(t, pkts[i], {Ctr::pass, port});
    t.flush_to(ctx.ctr(dev));
}

void resolve_peer_tick(WorkerCtx& ctx) {
    const Snapshot& s = *ctx.snap;
    if (ctx.id != 0 || s.arp_refresh_ms == 0) return; // a static next hop
    const uint64_t now = rte_get_tsc_cycles();
    if (now < ctx.next_arp_tsc) return;
    // Unknown: ask every second. Known: ask again every arp_refresh_ms, so a peer that came
    // back with another MAC (a restarted ztunnel) is re-learned from its answer.
    const uint64_t ms = s.nexthop_known ? s.arp_refresh_ms : 1000;
    ctx.next_arp_tsc = now + rte_get_tsc_hz() / 1000 * ms;

    rte_mbuf* m = rte_pktmbuf_alloc(ctx.shared->pool);
    if (m == nullptr) return;
    constexpr uint16_t kLen = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);
    auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, kLen));
    std::memset(eth->dst_addr.addr_bytes, 0xFF, RTE_ETHER_ADDR_LEN);
    eth->src_addr = s.link_mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
    arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    arp->arp_hlen = RTE_ETHER_ADDR_LEN;
    arp->arp_plen = 4;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
    arp->arp_data.arp_sha = s.link_mac;
    std::memcpy(&arp->arp_data.arp_sip, &s.local_ip.raw, 4);
    std::memset(arp->arp_data.arp_tha.addr_bytes, 0, RTE_ETHER_ADDR_LEN);
    std::memcpy(&arp->arp_data.arp_tip, &s.remote_ip.raw, 4);
    const uint16_t link = ctx.shared->topo->link;
    ctx.ctr(link).add(Ctr::arp_sent, 1);
    ctx.send(link, m);
}

} // namespace ztg
