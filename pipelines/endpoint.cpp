#include "pipelines/endpoint.hpp"

#include <rte_ip.h>
#include <rte_prefetch.h>

#include "dataplane/decap.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/offload.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/common.hpp"

namespace ztg {

namespace {

// A valid Geneve frame from the node: its inner frame goes to the tap of its VNI as the
// kernel's geneve device would hand it up (ECN per RFC 6040).
Verdict decapsulate_to_tap(rte_mbuf* m, const GeneveView& g, const Snapshot& s) {
    const TunnelEntry* tn = s.by_vni(g.vni);
    if (tn == nullptr) return dropped(Ctr::decap_bad_vni);
    truncate(m, g.outer_end); // what lies past the outer datagram is not part of the inner frame
    rte_pktmbuf_adj(m, g.inner_off);
    const Parsed p = parse_frame(m);
    if (p.ipv4) {
        // As the kernel: RFC 6040 for an untagged IPv4 inner frame (a VLAN tag hides it).
        auto* ip = rte_pktmbuf_mtod_offset(m, uint8_t*, p.l3_off);
        if (p.l3_off == sizeof(rte_ether_hdr) && !ecn_decapsulate(g.outer_ecn, ip))
            return dropped(Ctr::decap_ecn_drop);
        truncate(m, p.l3_off + p.ip_len); // Ethernet padding
    }
    return {Ctr::decap, tn->dev};
}

// The kernel sent a frame out of a tunnel tap (pistioout): encapsulated whole, inner
// Ethernet header as the kernel wrote it, toward the node.
Verdict encapsulate_from_tap(rte_mbuf* m, const EncapTemplate& tmpl, const Snapshot& s,
                             uint16_t link) {
    const Parsed p = parse_frame(m);
    if (p.ipv4 && p.l3_off == sizeof(rte_ether_hdr)) truncate(m, p.l3_off + p.ip_len); // padding
    if (!s.nexthop_known) return dropped(Ctr::drop_no_nexthop);
    if (m->pkt_len - sizeof(rte_ether_hdr) > s.max_inner_len) // outer would exceed the MTU
        return dropped(Ctr::drop_too_big);
    if (!push_tunnel_headers(m, tmpl, kOuterLen, p.ipv4 ? p.tos & RTE_IPV4_HDR_ECN_MASK : 0,
                             p.ipv4 ? flow_source_port(p) : 0xC000))
        return dropped(Ctr::drop_no_headroom);
    return {Ctr::redirect, link};
}

} // namespace

void endpoint_from_uplink(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
        rte_mbuf* m = pkts[i];
        snoop_peer_arp(ctx, m);
        const Parsed p = parse_frame(m);
        const GeneveView g = inspect_geneve(m, p, s.decap);
        if (g.verdict == Tunnel::NotOurs && complete_partial_l4_checksum(m, p))
            t.inc(Ctr::csum_completed); // for the kernel twin, from a sender's offload
        const Verdict v = g.verdict == Tunnel::NotOurs ? to_twin(ctx, dev)
                          : g.verdict == Tunnel::Drop  ? dropped(g.reason)
                                                       : decapsulate_to_tap(m, g, s);
        ctx.dispose(t, m, v);
    }
    t.flush_to(ctx.ctr(dev));
}

void endpoint_from_tunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    const uint16_t link = ctx.shared->topo->link;
    const EncapTemplate& tmpl = s.by_dev(dev)->tmpl; // every tap has its tunnel
    BurstTally t;
    for (uint16_t i = 0; i < n; i++)
        ctx.dispose(t, pkts[i], encapsulate_from_tap(pkts[i], tmpl, s, link));
    t.flush_to(ctx.ctr(dev));
}

const Pipeline& endpoint_pipeline() {
    static const Pipeline p = [] {
        Pipeline q;
        q.stage[size_t(DevKind::Uplink)] = endpoint_from_uplink;
        q.stage[size_t(DevKind::Tunnel)] = endpoint_from_tunnel;
        q.stage[size_t(DevKind::Twin)] = from_twin;
        q.tick = resolve_peer_tick;
        return q;
    }();
    return p;
}

} // namespace ztg
