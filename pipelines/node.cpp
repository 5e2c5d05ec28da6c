#include "pipelines/node.hpp"

#include <cstring>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_prefetch.h>

#include "dataplane/geneve.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/common.hpp"

namespace ztg {

namespace {

constexpr uint16_t kPrefetchAhead = 4;

// The `ZT_IP dev veth scope link` route of table 101: a routed hop, so the MACs are
// rewritten and the TTL decremented (RFC 1624 incremental checksum). Returns false if the
// TTL would expire: the kernel twin then answers with ICMP time exceeded.
bool forward_direct(rte_mbuf* m, const Parsed& p, const Snapshot& s) {
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, p.l3_off);
    if (ip->time_to_live <= 1) return false;
    ip->time_to_live--;
    uint32_t sum = uint32_t(rte_be_to_cpu_16(ip->hdr_checksum)) + 0x0100;
    ip->hdr_checksum = rte_cpu_to_be_16(uint16_t(sum + (sum >> 16)));
    rte_pktmbuf_adj(m, uint16_t(p.l3_off - sizeof(rte_ether_hdr))); // drop a VLAN tag
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    eth->dst_addr = s.nexthop_mac;
    eth->src_addr = s.ztunnel_port_mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    return true;
}

} // namespace

void node_from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    const uint16_t zt = ctx.shared->topo->ztunnel;
    Parsed p[kBurst];
    Ip4 src[kBurst];
    for (uint16_t i = 0; i < n && i < kPrefetchAhead; i++)
        rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
    for (uint16_t i = 0; i < n; i++) {
        if (i + kPrefetchAhead < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        p[i] = parse_frame(pkts[i]);
        src[i] = p[i].src; // 0.0.0.0 for non-IPv4: never a pod
    }
    const uint64_t is_pod = ctx.shared->pods->lookup_bulk(src, n);

    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        rte_mbuf* m = pkts[i];
        // The kernel's mark rule: -p <proto> -m set --match-set ztunnel-pods-ips src.
        const bool marked = p[i].ipv4 && ((is_pod >> i) & 1) && s.redirects(p[i].proto);
        if (!marked) {
            to_twin(ctx, dev, m, t);
            continue;
        }
        if (!s.nexthop_known) {
            t.inc(Ctr::drop_no_nexthop);
            rte_pktmbuf_free(m);
            continue;
        }
        if (p[i].dst == s.ztunnel_ip) { // table 101: ZT_IP dev <veth> scope link
            if (forward_direct(m, p[i], s)) {
                t.inc(Ctr::direct);
                ctx.send(zt, m);
            } else {
                to_twin(ctx, dev, m, t);
            }
            continue;
        }
        if (p[i].ip_len > s.max_inner_len) {
            t.inc(Ctr::drop_too_big);
            rte_pktmbuf_free(m);
            continue;
        }
        if (!encapsulate(m, p[i], s.tmpl)) {
            t.inc(Ctr::drop_no_headroom);
            rte_pktmbuf_free(m);
            continue;
        }
        t.inc(Ctr::redirect);
        ctx.send(zt, m);
    }
    t.flush_to(ctx.ctr(dev));
}

void node_from_ztunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        // Learn (or re-learn, after a ztunnel restart) the next hop from its ARP.
        if (const rte_ether_addr* mac = arp_sender_mac(pkts[i], s.ztunnel_ip);
            mac != nullptr && (!s.nexthop_known || !rte_is_same_ether_addr(mac, &s.nexthop_mac)))
            ctx.post(Event{Event::Kind::NextHopMac, s.ztunnel_ip, *mac});
        to_twin(ctx, dev, pkts[i], t);
    }
    t.flush_to(ctx.ctr(dev));
}

void from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const uint16_t port = ctx.shared->topo->devs[dev].peer;
    for (uint16_t i = 0; i < n; i++) ctx.send(port, pkts[i]);
    ctx.ctr(dev).add(Ctr::pass, n);
}

void node_tick(WorkerCtx& ctx) {
    const Snapshot& s = *ctx.snap;
    if (ctx.id != 0 || s.nexthop_known) return;
    const uint64_t now = rte_get_tsc_cycles();
    if (now < ctx.next_arp_tsc) return;
    ctx.next_arp_tsc = now + rte_get_tsc_hz(); // one request a second until answered

    rte_mbuf* m = rte_pktmbuf_alloc(ctx.shared->pool);
    if (m == nullptr) return;
    constexpr uint16_t kLen = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);
    auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, kLen));
    std::memset(eth->dst_addr.addr_bytes, 0xFF, RTE_ETHER_ADDR_LEN);
    eth->src_addr = s.ztunnel_port_mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
    arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    arp->arp_hlen = RTE_ETHER_ADDR_LEN;
    arp->arp_plen = 4;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
    arp->arp_data.arp_sha = s.ztunnel_port_mac;
    std::memcpy(&arp->arp_data.arp_sip, &s.local_ip.raw, 4);
    std::memset(arp->arp_data.arp_tha.addr_bytes, 0, RTE_ETHER_ADDR_LEN);
    std::memcpy(&arp->arp_data.arp_tip, &s.ztunnel_ip.raw, 4);
    const uint16_t zt = ctx.shared->topo->ztunnel;
    ctx.ctr(zt).add(Ctr::arp_sent, 1);
    ctx.send(zt, m);
}

const Pipeline& node_pipeline() {
    static const Pipeline p = [] {
        Pipeline q;
        q.stage[size_t(DevKind::Pods)] = node_from_pods;
        q.stage[size_t(DevKind::Ztunnel)] = node_from_ztunnel;
        q.stage[size_t(DevKind::Twin)] = from_twin;
        q.tick = node_tick;
        return q;
    }();
    return p;
}

} // namespace ztg
