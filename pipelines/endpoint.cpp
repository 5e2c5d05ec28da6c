#include "pipelines/endpoint.hpp"

#include <rte_ip.h>
#include <rte_prefetch.h>

#include "dataplane/decap.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/common.hpp"
#include "pipelines/node.hpp"

namespace ztg {

namespace {

uint16_t tunnel_of(const Topology& topo, uint32_t vni) {
    for (uint16_t d = 0; d < topo.devs.size(); d++)
        if (topo.devs[d].kind == DevKind::Tunnel && topo.devs[d].vni == vni) return d;
    return kNoDev;
}

// A valid Geneve frame from the node: its inner frame goes to the tap of its VNI as the
// kernel's geneve device would hand it up (ECN per RFC 6040). Returns the counter.
Ctr decapsulate_to_tap(WorkerCtx& ctx, rte_mbuf* m, const GeneveView& g) {
    const uint16_t tap = tunnel_of(*ctx.shared->topo, g.vni);
    if (tap == kNoDev) return Ctr::decap_bad_vni;
    truncate(m, g.outer_end); // what lies past the outer datagram is not part of the inner frame
    rte_pktmbuf_adj(m, g.inner_off);
    const Parsed p = parse_frame(m);
    if (p.ipv4) {
        // As the kernel: RFC 6040 for an untagged IPv4 inner frame (a VLAN tag hides it).
        auto* ip = rte_pktmbuf_mtod_offset(m, uint8_t*, p.l3_off);
        if (p.l3_off == sizeof(rte_ether_hdr) && !ecn_decapsulate(g.outer_ecn, ip))
            return Ctr::decap_ecn_drop;
        truncate(m, p.l3_off + p.ip_len); // Ethernet padding
    }
    ctx.send(tap, m);
    return Ctr::decap;
}

} // namespace

void endpoint_from_uplink(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
        rte_mbuf* m = pkts[i];
        snoop_peer_arp(ctx, m);
        const GeneveView g = inspect_geneve(m, s.decap);
        if (g.verdict == Tunnel::NotOurs) {
            to_twin(ctx, dev, m, t);
            continue;
        }
        const Ctr c = g.verdict == Tunnel::Drop ? g.reason : decapsulate_to_tap(ctx, m, g);
        t.inc(c);
        if (c != Ctr::decap) rte_pktmbuf_free(m);
    }
    t.flush_to(ctx.ctr(dev));
}

// The kernel sent a frame out of a tunnel tap (pistioout): encapsulate it whole, inner
// Ethernet header as the kernel wrote it, toward the node.
void endpoint_from_tunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    const uint16_t link = ctx.shared->topo->link;
    const EncapTemplate& tmpl = s.tunnel_tmpl[dev];
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        rte_mbuf* m = pkts[i];
        const Parsed p = parse_frame(m);
        if (p.ipv4 && p.l3_off == sizeof(rte_ether_hdr))
            truncate(m, p.l3_off + p.ip_len); // padding
        Ctr c = Ctr::redirect;
        if (!s.nexthop_known)
            c = Ctr::drop_no_nexthop;
        else if (m->pkt_len - sizeof(rte_ether_hdr) > s.max_inner_len) // outer would exceed the MTU
            c = Ctr::drop_too_big;
        else if (!push_tunnel_headers(m, tmpl, kOuterLen,
                                      p.ipv4 ? p.tos & RTE_IPV4_HDR_ECN_MASK : 0,
                                      p.ipv4 ? flow_source_port(p) : 0xC000))
            c = Ctr::drop_no_headroom;
        t.inc(c);
        if (c == Ctr::redirect)
            ctx.send(link, m);
        else
            rte_pktmbuf_free(m);
    }
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
