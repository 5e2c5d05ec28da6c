#include "pipelines/node.hpp"

#include <algorithm>
#include <cstring>

#include <rte_cycles.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_prefetch.h>
#include <rte_tcp.h>

#include "dataplane/cksum.hpp"
#include "dataplane/decap.hpp"
#include "dataplane/fragment.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/nat.hpp"
#include "dataplane/offload.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/common.hpp"

namespace ztg {

namespace {

constexpr uint16_t kPrefetchAhead = 4;

// The `ZT_IP dev veth scope link` route of table 101: a routed hop, so the MACs are
// rewritten and the TTL decremented (RFC 1624 incremental checksum). Returns false if the
// TTL would expire: the kernel twin then answers with ICMP time exceeded.
bool route_one_hop(rte_mbuf* m, const Parsed& p, const rte_ether_addr& dst,
                   const rte_ether_addr& src) {
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, p.l3_off);
    if (ip->time_to_live <= 1) return false;
    ipv4_decrement_ttl(ip);
    rte_pktmbuf_adj(m, uint16_t(p.l3_off - sizeof(rte_ether_hdr))); // drop a VLAN tag
    truncate(m, sizeof(rte_ether_hdr) + p.ip_len); // and any padding, as the kernel routes
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    eth->dst_addr = dst;
    eth->src_addr = src;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    return true;
}
bool forward_direct(rte_mbuf* m, const Parsed& p, const Snapshot& s) {
    return route_one_hop(m, p, s.nexthop_mac, s.link_mac);
}

// To the kernel's routes, counted as c: the receiving port's twin (the kernel forwards it);
// with attach: xdp, which has no twin, the uplink port's device, whose aggregation device's tc
// program routes by the kernel's FIB (MACs from its neighbours), after the hop ztgeneve makes
// (TTL - 1; TTL 1, which the kernel would answer: no way to it, dropped as drop_no_twin).
Verdict to_kernel_routes(const WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p, Ctr c) {
    const Topology& topo = *ctx.shared->topo;
    if (topo.devs[dev].peer != kNoDev || topo.xdp_uplink == kNoDev) return to_twin_as(ctx, dev, c);
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    const rte_ether_addr dst = eth->dst_addr, src = eth->src_addr;
    return route_one_hop(m, p, dst, src) ? Verdict{c, topo.xdp_uplink} : dropped(Ctr::drop_no_twin);
}

// The TCP flags of an unfragmented TCP packet whose header is in the first segment, else 0.
uint8_t tcp_flags(const rte_mbuf* m, const Parsed& p) {
    if (p.proto != IPPROTO_TCP || p.fragment) return 0;
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, p.l3_off);
    const uint32_t off = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4u + 13;
    if (off >= p.ip_len || p.l3_off + off >= m->data_len) return 0;
    return rte_pktmbuf_mtod_offset(m, const uint8_t*, p.l3_off + off)[0];
}
constexpr uint8_t kFinRst = RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG;
bool is_syn(uint8_t f) {
    return (f & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == RTE_TCP_SYN_FLAG;
}

// ICMP "fragmentation needed" (type 3 code 4, RFC 1191) to the pod whose DF packet does
// not fit the tunnel, with the next-hop MTU = tunnel MTU - 50, as the kernel answers for
// istioout; from the node's address, out of the pod's port. At most kIcmpPerSecond per
// worker (a token bucket). The original packet stays the caller's (it is dropped).
constexpr uint32_t kIcmpPerSecond = 100;
constexpr uint16_t kIcmpQuote = 548; // 576 - 20 - 8: as much of the packet as RFC 1812 asks

Ctr send_frag_needed(WorkerCtx& ctx, uint16_t dev, const rte_mbuf* m, const Parsed& p,
                     const Snapshot& s) {
    const uint64_t now = rte_rdtsc();
    const uint64_t hz = rte_get_tsc_hz();
    if (now - ctx.icmp_tokens_tsc >= hz) {
        ctx.icmp_tokens = kIcmpPerSecond;
        ctx.icmp_tokens_tsc = now;
    }
    if (ctx.icmp_tokens == 0) return Ctr::icmp_rate_limited;
    rte_mbuf* r = rte_pktmbuf_alloc(ctx.shared->pool);
    if (r == nullptr) return Ctr::icmp_rate_limited;
    ctx.icmp_tokens--;
    const uint16_t quote = std::min<uint16_t>(
        kIcmpQuote, uint16_t(std::min<uint32_t>(p.ip_len, m->data_len - p.l3_off)));
    const uint16_t len =
        uint16_t(sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + sizeof(rte_icmp_hdr) + quote);
    auto* b = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(r, len));
    auto* eth = reinterpret_cast<rte_ether_hdr*>(b);
    eth->dst_addr = rte_pktmbuf_mtod(m, const rte_ether_hdr*)->src_addr;
    eth->src_addr = ctx.shared->topo->devs[dev].mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
    *ip = {};
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16(uint16_t(len - sizeof(rte_ether_hdr)));
    ip->time_to_live = 64;
    ip->next_proto_id = IPPROTO_ICMP;
    ip->src_addr = s.local_ip.raw;
    ip->dst_addr = p.src.raw;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    auto* icmp = reinterpret_cast<rte_icmp_hdr*>(ip + 1);
    icmp->icmp_type = 3;                                   // destination unreachable
    icmp->icmp_code = 4;                                   // fragmentation needed and DF set
    icmp->icmp_ident = 0;                                  // unused
    icmp->icmp_seq_nb = rte_cpu_to_be_16(s.max_inner_len); // next-hop MTU (RFC 1191)
    icmp->icmp_cksum = 0;
    std::memcpy(icmp + 1, rte_pktmbuf_mtod_offset(m, const uint8_t*, p.l3_off), quote);
    icmp->icmp_cksum = uint16_t(~rte_raw_cksum(icmp, sizeof(rte_icmp_hdr) + quote));
    ctx.send(dev, r);
    return Ctr::icmp_frag_needed;
}

// A redirect that does not fit the tunnel (RFC 8926 §4.4.1, as the kernel treats what it
// routes into istioout): with DF, dropped and the sender told the tunnel MTU; without,
// split into fragments that each fit (tunnel.too_big: fragment) or dropped (drop). The
// fragments are new frames, sent and counted here (t); m itself is freed by its verdict.
// Fragments share the packet's flow hash, so they take the same path.
// Inbound (tn is istioin, icmp false): no ICMP, as the sender is behind the kernel, whose
// own address ztgeneve cannot send from into it; a DF packet is dropped and counted.
[[gnu::noinline]] Verdict too_big(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                                  const Snapshot& s, const TunnelEntry& tn, bool icmp,
                                  BurstTally& t) {
    static_assert(RTE_PKTMBUF_HEADROOM >= EncapTemplate::kSize, "fragments need the headroom");
    if (p.df && icmp) t.inc(send_frag_needed(ctx, dev, m, p, s));
    if (p.df || !s.fragment) return dropped(Ctr::drop_too_big);
    rte_mbuf* frags[kMaxFragments];
    const Fragments f = fragment_ipv4(m, p, s.max_inner_len, ctx.shared->pool, frags);
    if (f.n == 0)
        return dropped(f.no_mbuf      ? Ctr::drop_no_mbuf
                       : f.bad_header ? Ctr::drop_bad_header
                                      : Ctr::drop_too_big);
    const uint16_t sport = flow_source_port(p);
    for (uint16_t k = 0; k < f.n; k++) {
        push_tunnel_headers(frags[k], tn.tmpl, EncapTemplate::kSize, p.tos & RTE_IPV4_HDR_ECN_MASK,
                            sport); // a fresh mbuf: the headroom is there
        ctx.send(ctx.shared->topo->link, frags[k]);
    }
    t.inc(Ctr::fragments, f.n);
    return dropped(Ctr::fragmented); // its copies went out
}

// note_pod's slow path: the pod's location differs from the table's.
[[gnu::noinline, gnu::cold]] void note_pod_changed(WorkerCtx& ctx, Ip4 ip, uint16_t dev,
                                                   const rte_ether_addr& mac) {
    const PodLocation here = PodLocation::of(dev, mac);
    const uint64_t key = here.word * 0x9E3779B97F4A7C15ull ^ ip.raw;
    uint64_t& slot = ctx.pod_seen[(key >> 56) ^ (ip.raw & 0xff)];
    if (slot == key) return;
    slot = key;
    ctx.post(Event{Event::Kind::PodSeen, ip, mac, dev});
}

// Tells control where a pod was seen, once per change (the return path delivers there).
// known_tag: the pod's location tag in the table. Inline: the tag compare runs for every
// packet of a pod; the rest only on a change.
inline void note_pod(WorkerCtx& ctx, Ip4 ip, uint32_t known_tag, uint16_t dev,
                     const rte_ether_addr& mac) {
    if (known_tag == PodLocation::tag_of(dev, mac)) [[likely]]
        return;
    note_pod_changed(ctx, ip, dev, mac);
}

// An ARP request inside the tunnel for istioout's own address (the ztunnel side's
// `default via 192.168.127.1 dev pistioout` needs it)?
bool is_tunnel_arp_request(const rte_mbuf* m, uint16_t inner_off, const TunnelEntry& tn) {
    if (m->data_len < inner_off + sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return false;
    const auto* eth = rte_pktmbuf_mtod_offset(m, const rte_ether_hdr*, inner_off);
    if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return false;
    const auto* arp = reinterpret_cast<const rte_arp_hdr*>(eth + 1);
    uint32_t tip;
    std::memcpy(&tip, &arp->arp_data.arp_tip, 4);
    return arp->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) && tip == tn.inner_ip.raw &&
           arp->arp_hlen == RTE_ETHER_ADDR_LEN && arp->arp_plen == 4;
}

// Answers that request as istioout would, back through the tunnel: m becomes the reply.
Verdict answer_tunnel_arp(WorkerCtx& ctx, rte_mbuf* m, uint16_t inner_off, const TunnelEntry& tn) {
    auto* eth = rte_pktmbuf_mtod_offset(m, rte_ether_hdr*, inner_off);
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    const rte_ether_addr asker = arp->arp_data.arp_sha;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    arp->arp_data.arp_tha = asker;
    std::memcpy(&arp->arp_data.arp_tip, &arp->arp_data.arp_sip, 4);
    arp->arp_data.arp_sha = tn.inner_src;
    std::memcpy(&arp->arp_data.arp_sip, &tn.inner_ip.raw, 4);
    rte_pktmbuf_adj(m, uint16_t(inner_off + sizeof(rte_ether_hdr)));
    truncate(m, sizeof(rte_arp_hdr));
    if (!push_tunnel_headers(m, tn.tmpl, EncapTemplate::kSize, 0, 0xC000))
        return dropped(Ctr::drop_no_headroom);
    auto* inner = rte_pktmbuf_mtod_offset(m, rte_ether_hdr*, kOuterLen);
    inner->dst_addr = asker;
    inner->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    return {Ctr::tunnel_arp_reply, ctx.shared->topo->link};
}

// The inner frame at `off` (Ethernet + IPv4 of `frame` bytes) becomes a routed frame:
// the tunnel headers go, the MACs are set.
void strip_to_inner(rte_mbuf* m, uint16_t off, uint32_t frame, const rte_ether_addr& dst,
                    const rte_ether_addr& src) {
    rte_pktmbuf_adj(m, off);
    truncate(m, frame);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    eth->dst_addr = dst;
    eth->src_addr = src;
}

// A valid Geneve frame from ztunnel (inner frame at g.inner_off): delivered to the pod
// that owns the inner destination, as the kernel routes what istioout decapsulates (one
// hop: TTL - 1). A destination that is no located pod (not seen yet, or not a pod), or
// whose TTL runs out, goes to the kernel through the ztunnel port's twin, as if ztunnel
// had routed it there: the kernel forwards it (and ARPs for the pod, which teaches us
// where it is) or answers with ICMP.
Verdict deliver_to_pod(WorkerCtx& ctx, rte_mbuf* m, const GeneveView& g, const Snapshot& s) {
    const TunnelEntry* tn = s.by_vni(g.vni);
    if (tn == nullptr) return dropped(Ctr::decap_bad_vni);
    if (is_tunnel_arp_request(m, g.inner_off, *tn))
        return answer_tunnel_arp(ctx, m, g.inner_off, *tn);
    // The inner frame, bounded by the outer datagram: untagged IPv4, whole.
    const uint32_t avail = g.outer_end - g.inner_off;
    const Parsed in =
        parse_ether(rte_pktmbuf_mtod_offset(m, const uint8_t*, g.inner_off), avail, avail);
    if (!in.ipv4 || in.l3_off != sizeof(rte_ether_hdr)) return dropped(Ctr::decap_bad_inner);
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, g.inner_off + in.l3_off);
    if (!ecn_decapsulate(g.outer_ecn, reinterpret_cast<uint8_t*>(ip)))
        return dropped(Ctr::decap_ecn_drop);
    const uint32_t frame = sizeof(rte_ether_hdr) + in.ip_len;
    const PodLocation loc = ctx.shared->pods->location(in.dst);
    if (!loc.known() || ip->time_to_live <= 1) {
        const Topology& topo = *ctx.shared->topo;
        const uint16_t twin = topo.devs[topo.link].peer;
        if (twin == kNoDev) { // attach: xdp (istioin's decapsulation: mark 0x200, table main)
            const auto* inner = rte_pktmbuf_mtod_offset(m, const rte_ether_hdr*, g.inner_off);
            strip_to_inner(m, g.inner_off, frame, inner->dst_addr, inner->src_addr);
            return to_kernel_routes(ctx, topo.link, m, in, Ctr::decap_unknown_pod);
        }
        strip_to_inner(m, g.inner_off, frame, ctx.shared->topo->devs[twin].mac, s.nexthop_mac);
        return {Ctr::decap_unknown_pod, twin};
    }
    ipv4_decrement_ttl(ip);
    strip_to_inner(m, g.inner_off, frame, loc.mac(), ctx.shared->topo->devs[loc.dev()].mac);
    return {Ctr::decap, loc.dev()};
}

// A pod's ARP teaches where the pod is, as its IPv4 does.
void learn_from_arp(WorkerCtx& ctx, uint16_t dev, const rte_mbuf* m) {
    const rte_arp_hdr* arp = arp_of(m);
    if (arp == nullptr) return;
    const Ip4 sip = arp_sender_ip(arp);
    uint32_t known;
    if (ctx.shared->pods->lookup_bulk(&sip, 1, &known) != 0)
        note_pod(ctx, sip, known, dev, arp->arp_data.arp_sha);
}

// Inbound: a pod's TCP on a connection in the flow table, looked up the other way round
// (the pod is the key's destination). Proxied (connmark 0x210 -> mark 0x040, table 102
// `default via ZT_IP dev <veth> onlink`): to ztunnel unencapsulated, one routed hop. The
// node's own connection (0x220): to the kernel. Else nullopt: classified as before.
[[gnu::noinline]] bool connection_of_pod(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                                         const Snapshot& s, BurstTally& t, Verdict& v) {
    FlowTable& ft = *ctx.shared->flows;
    const FlowKind k = ft.touch({p.dst, p.src, p.dport, p.sport}, ft.tick(rte_rdtsc()),
                                (tcp_flags(m, p) & kFinRst) != 0);
    if (k == FlowKind::None) return false;
    t.inc(Ctr::flow_hit);
    if (k == FlowKind::Host) {
        v = to_twin_as(ctx, dev, Ctr::skip_host);
    } else if (!s.nexthop_known) {
        v = dropped(Ctr::drop_no_nexthop);
    } else {
        v = forward_direct(m, p, s) ? Verdict{Ctr::proxy_return, ctx.shared->topo->link}
                                    : to_twin(ctx, dev); // TTL: the kernel answers
    }
    return true;
}

// DNS capture (inbound.dns_capture): the kernel's `-p udp -m set --match-set
// ztunnel-pods-ips src --dport 53 -j DNAT --to ZT_IP:15053` and its routing of the result
// (mark 0x220: table main, `ZT_IP dev <veth>`): the query goes to ztunnel unencapsulated,
// one routed hop, with its original destination remembered per (pod, source port) for the
// answer. What the kernel would answer itself goes there first (a UDP header cut short, TTL
// 1: time exceeded); no next hop: dropped, as a direct packet is. No room in the table:
// the query takes the kernel path as without capture (where the kernel's DNAT rule and
// conntrack, if installed, do the same).
[[gnu::noinline]] Verdict capture_dns(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                                      const Snapshot& s, BurstTally& t) {
    const L4Field f = l4_checksum_field(m, p);
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, p.l3_off);
    if (f.field == 0 || ip->time_to_live <= 1) return to_twin(ctx, dev);
    if (!s.nexthop_known) return dropped(Ctr::drop_no_nexthop);
    FlowTable& ft = *ctx.shared->flows;
    const auto r = ft.dns_learn(dns_key(s.remote_ip, p.src, p.sport), ft.tick(rte_rdtsc()), p.dst);
    if (r == FlowTable::Learn::Full) return to_twin_as(ctx, dev, Ctr::dns_flow_full);
    t.inc(r == FlowTable::Learn::Inserted ? Ctr::flow_insert : Ctr::flow_hit);
    rewrite_udp_end(m, p, f, UdpEnd::Destination, s.remote_ip, Be16::from_host(kZtunnelDnsPort));
    forward_direct(m, p, s); // the TTL was checked
    return {Ctr::dns_capture, ctx.shared->topo->link};
}

// A frame from a pod, parsed (p) and looked up (known: its source is in the pod table, with
// the location tag `tag`); pod: it is to be redirected, as the kernel's mark rule
// `-p <proto> -m set --match-set ztunnel-pods-ips src` decides, or redirect or pass.
[[gnu::always_inline]] inline Verdict from_pod(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m,
                                               const Parsed& p, bool pod, bool known, uint32_t tag,
                                               const Snapshot& s, BurstTally& t) {
    if (known) note_pod(ctx, p.src, tag, dev, rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr);
    // The proxy-return rule comes before the mark rule, as in the kernel's chain.
    if (s.inbound && p.ipv4 && p.proto == IPPROTO_TCP && !p.fragment &&
        ctx.shared->flows->connections() != 0) {
        Verdict v;
        if (connection_of_pod(ctx, dev, m, p, s, t, v)) return v;
    }
    // The nat rule comes after the mangle marks (a pod's UDP: skip, 0x220), whatever
    // redirect.protocols says.
    if (s.dns_capture && known && p.proto == IPPROTO_UDP && !p.fragment &&
        p.dport == Be16::from_host(kDnsPort)) [[unlikely]]
        return capture_dns(ctx, dev, m, p, s, t);
    if (!pod || !s.redirects(p.proto)) {
        if (!p.ipv4) learn_from_arp(ctx, dev, m);
        return to_twin(ctx, dev);
    }
    const uint16_t zt = ctx.shared->topo->link;
    if (!s.nexthop_known) return dropped(Ctr::drop_no_nexthop);
    if (p.dst == s.remote_ip) // table 101: ZT_IP dev <veth> scope link
        return forward_direct(m, p, s) ? Verdict{Ctr::direct, zt} : to_twin(ctx, dev);
    if (p.ip_len > s.max_inner_len) [[unlikely]]
        return too_big(ctx, dev, m, p, s, s.outbound(), true, t);
    if (!encapsulate(m, p, s.outbound().tmpl)) return dropped(Ctr::drop_no_headroom);
    return {Ctr::redirect, zt};
}

// One frame of from_pods, parsed and looked up, to its verdict. A pod's kernel leaves
// TCP/UDP checksums to the veth's offload: they are completed before the frame goes
// anywhere (tunnel, ztunnel, kernel twin).
[[gnu::always_inline]] inline void classify_one(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m,
                                                const Parsed& p, bool pod, bool known, uint32_t tag,
                                                const Snapshot& s, BurstTally& t) {
    if (complete_partial_l4_checksum(m, p)) [[unlikely]]
        t.inc(Ctr::csum_completed);
    ctx.dispose(t, m, from_pod(ctx, dev, m, p, pod, known, tag, s, t));
}

// Classified: the kernel's program has chosen the frames already (attach: xdp, pods of its
// meshed set, redirected protocols): each IPv4 frame is redirected, even in the moment a
// pod is leaving the table after the kernel's set. Else the table decides, as the mark
// rule does.
template <bool Classified>
void from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    Parsed p[kBurst];
    Ip4 src[kBurst];
    uint32_t tag[kBurst];
    for (uint16_t i = 0; i < n && i < kPrefetchAhead; i++)
        rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
    for (uint16_t i = 0; i < n; i++) {
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        p[i] = parse_frame(pkts[i]);
        src[i] = p[i].src; // 0.0.0.0 for non-IPv4: never a pod
    }
    const uint64_t is_pod = ctx.shared->pods->lookup_bulk(src, n, tag);

    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        const bool known = p[i].ipv4 && ((is_pod >> i) & 1);
        const bool pod = Classified ? p[i].ipv4 && s.redirects(p[i].proto) : known;
        classify_one(ctx, dev, pkts[i], p[i], pod, known, tag[i], s, t);
    }
    t.flush_to(ctx.ctr(dev));
}

#ifdef __SSE4_1__
// The vector path of from_pods (issue 14): the same verdicts and bytes, the burst taken in
// groups of kGroup. The mbuf headers are prefetched two groups ahead and the frames one
// group ahead (the scalar loop reads each mbuf header to find the frame it prefetches, a
// miss of its own); each frame is parsed by parse_frame_fast; the pod table is looked up
// for the whole burst (hashes first, slots prefetched, then the probes); a frame that
// takes the usual redirect (a located pod's unfragmented TCP, no partial checksum, within
// the MTU, room before it, and nothing of the burst's snapshot in the way) is encapsulated
// by encapsulate_wide; every other frame goes through from_pod as on the scalar path.
constexpr uint16_t kGroup = 4;

// What of the usual redirect the snapshot and topology rule on for a whole burst: a next
// hop, no outer UDP checksum, TCP redirected, no proxied connections to look up first
// (connection_of_pod; captured DNS queries are none), and a device toward ztunnel to send
// on. A pod's UDP never takes it (parse_usual: TCP only), so DNS capture needs no test here.
bool usual_redirect_allowed(const WorkerCtx& ctx, const Snapshot& s) {
    return s.nexthop_known && !s.outbound().tmpl.udp_checksum && s.redirects(IPPROTO_TCP) &&
           !(s.inbound && ctx.shared->flows->connections() != 0) &&
           ctx.shared->topo->link != kNoDev;
}

// Parses m into p (parse_frame_fast) and tells whether the frame itself allows the usual
// redirect: the fast parse took it (untagged IPv4 without options, unfragmented TCP), its
// checksum is not left to an offload, it is not for ztunnel's own address (table 101), it
// fits the tunnel, and it is one segment with room for the 64 bytes before its IPv4
// header. Decided here, where the fields are in registers: the classify loop then tests
// one bit a frame.
[[gnu::always_inline]] inline bool parse_usual(const rte_mbuf* m, Parsed& p, const Snapshot& s) {
    return parse_frame_fast(m, p) && !p.csum_maybe_partial && p.dst != s.remote_ip &&
           p.ip_len <= s.max_inner_len && m->nb_segs == 1 &&
           m->data_off >= EncapTemplate::kSize - sizeof(rte_ether_hdr);
}

template <bool Classified>
void from_pods_vector(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    Parsed p[kBurst];
    Ip4 src[kBurst];
    uint32_t tag[kBurst];
    uint64_t usual = 0; // bit i: frame i allows the usual redirect (parse_usual)
    for (uint16_t i = 0; i < n && i < 2 * kGroup; i++) rte_prefetch0(pkts[i]);
    for (uint16_t i = 0; i < n && i < kGroup; i++) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
    uint16_t g = 0;
    // Whole groups with two more behind them: straight-line code, no bound per packet
    // (the bounded loops cost some 19 instructions a packet, callgrind).
    for (; g + 3 * kGroup <= n; g += kGroup) {
        for (uint16_t k = 0; k < kGroup; k++) rte_prefetch0(pkts[g + 2 * kGroup + k]);
        for (uint16_t k = 0; k < kGroup; k++)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[g + kGroup + k], void*));
        for (uint16_t k = 0; k < kGroup; k++) {
            usual |= uint64_t(parse_usual(pkts[g + k], p[g + k], s)) << (g + k);
            src[g + k] = p[g + k].src; // 0.0.0.0 for non-IPv4: never a pod
        }
    }
    // The last two groups (or a short burst): their headers are on their way.
    for (uint16_t i = uint16_t(g + kGroup); i < n; i++)
        rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
    for (uint16_t i = g; i < n; i++) {
        usual |= uint64_t(parse_usual(pkts[i], p[i], s)) << i;
        src[i] = p[i].src;
    }
    const uint64_t is_pod = ctx.shared->pods->lookup_bulk(src, n, tag);
    // Bit i: frame i takes the usual redirect. On the xdp port the kernel has chosen the
    // frames already: a frame's pod bit only says whether its location is to be checked.
    const uint64_t fast =
        usual_redirect_allowed(ctx, s) ? (Classified ? usual : usual & is_pod) : 0;

    const EncapTemplate& tmpl = s.outbound().tmpl;
    const uint16_t zt = ctx.shared->topo->link;
    BurstTally t;
    uint32_t redirects = 0; // the usual redirects, counted once for the burst
    for (uint16_t i = 0; i < n; i++) {
        rte_mbuf* m = pkts[i];
        const Parsed& q = p[i];
        if ((fast >> i) & 1) [[likely]] {
            if (!Classified || ((is_pod >> i) & 1)) // a pod of the table: its location
                note_pod(ctx, q.src, tag[i], dev, rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr);
            encapsulate_wide(m, q, tmpl);
            ctx.send(zt, m); // what dispose does with {Ctr::redirect, zt}
            redirects++;
            continue;
        }
        const bool known = q.ipv4 && ((is_pod >> i) & 1);
        const bool pod = Classified ? q.ipv4 && s.redirects(q.proto) : known;
        classify_one(ctx, dev, m, q, pod, known, tag[i], s, t);
    }
    t.inc(Ctr::redirect, redirects);
    t.flush_to(ctx.ctr(dev));
}
#endif

} // namespace

void node_from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
#ifdef __SSE4_1__
    if (ctx.vector_path) return from_pods_vector<false>(ctx, dev, pkts, n);
#endif
    from_pods<false>(ctx, dev, pkts, n);
}

void node_from_xdp_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
#ifdef __SSE4_1__
    if (ctx.vector_path) return from_pods_vector<true>(ctx, dev, pkts, n);
#endif
    from_pods<true>(ctx, dev, pkts, n);
}
// Inbound: ztunnel's unencapsulated TCP with a source not its own is a connection it
// opens for a client (`! -s ZT_IP -i <veth>` -> connmark 0x210): remembered in the flow
// table before it is sent on, and delivered to the pod as the kernel routes it (one hop,
// TTL - 1), or to the kernel if the pod is not located. No room in the table: dropped, as
// the kernel drops a new connection when conntrack is full (its reply would otherwise go
// to the client, or into the outbound tunnel).
Verdict proxied_from_ztunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                             BurstTally& t) {
    const uint8_t f = tcp_flags(m, p);
    FlowTable& ft = *ctx.shared->flows;
    const auto r = ft.learn({p.src, p.dst, p.sport, p.dport}, ft.tick(rte_rdtsc()), is_syn(f),
                            (f & kFinRst) != 0);
    if (r == FlowTable::Learn::Full) return dropped(Ctr::drop_flow_full);
    t.inc(r == FlowTable::Learn::Inserted ? Ctr::flow_insert : Ctr::flow_hit);
    const PodLocation loc = ctx.shared->pods->location(p.dst);
    if (loc.known() && route_one_hop(m, p, loc.mac(), ctx.shared->topo->devs[loc.dev()].mac))
        return {Ctr::proxied, loc.dev()};
    return to_kernel_routes(ctx, dev, m, p, Ctr::proxied_kernel);
}

// DNS capture: ztunnel's answer from ZT_IP:15053 to a pod. With the entry of its query, the
// source becomes the address the pod asked (ORIGINAL_DST:53, as conntrack undoes the DNAT)
// and it is routed to the pod as ztunnel's proxied packets are (TTL - 1); the pod not
// located yet (the answer can beat the control thread), or TTL 1: to the kernel through the
// twin, translated. Without an entry (expired; the table was full and the kernel carried
// the query; ztunnel's own traffic from that port): to the kernel unchanged, whose
// conntrack translates it back if it carried the query, as it would without capture.
Verdict answer_dns(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p, BurstTally& t) {
    FlowTable& ft = *ctx.shared->flows;
    const L4Field f = l4_checksum_field(m, p);
    Ip4 asked;
    if (f.field == 0 ||
        !ft.dns_lookup({p.src, p.dst, p.sport, p.dport}, ft.tick(rte_rdtsc()), asked))
        return to_twin_as(ctx, dev, Ctr::dns_no_entry);
    t.inc(Ctr::flow_hit);
    rewrite_udp_end(m, p, f, UdpEnd::Source, asked, Be16::from_host(kDnsPort));
    const PodLocation loc = ctx.shared->pods->location(p.dst);
    if (loc.known() && route_one_hop(m, p, loc.mac(), ctx.shared->topo->devs[loc.dev()].mac))
        return {Ctr::dns_answer, loc.dev()};
    return to_twin_as(ctx, dev, Ctr::dns_answer);
}

void node_from_ztunnel(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        rte_mbuf* m = pkts[i];
        snoop_peer_arp(ctx, m);
        const Parsed p = parse_frame(m);
        const GeneveView g = inspect_geneve(m, p, s.decap);
        if (g.verdict == Tunnel::NotOurs && complete_partial_l4_checksum(m, p))
            t.inc(Ctr::csum_completed); // ztunnel's own traffic, left to its veth's offload
        const bool proxied = g.verdict == Tunnel::NotOurs && s.inbound && p.ipv4 &&
                             p.proto == IPPROTO_TCP && !p.fragment && p.src != s.remote_ip;
        const bool dns = g.verdict == Tunnel::NotOurs && s.dns_capture && p.ipv4 &&
                         p.proto == IPPROTO_UDP && !p.fragment && p.src == s.remote_ip &&
                         p.sport == Be16::from_host(kZtunnelDnsPort);
        const Verdict v = proxied                        ? proxied_from_ztunnel(ctx, dev, m, p, t)
                          : dns                          ? answer_dns(ctx, dev, m, p, t)
                          : g.verdict == Tunnel::NotOurs ? to_twin(ctx, dev) // its own, ARP
                          : g.verdict == Tunnel::Drop    ? dropped(g.reason)
                                                         : deliver_to_pod(ctx, m, g, s);
        ctx.dispose(t, m, v);
    }
    t.flush_to(ctx.ctr(dev));
}

namespace {

// Inbound, chosen: Geneve VNI 1000 toward ztunnel (istioin), as the kernel's table 100 route
// sends it; too big for the tunnel: as too_big says, without ICMP.
Verdict into_istioin(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p, const Snapshot& s,
                     BurstTally& t) {
    if (!s.nexthop_known) return dropped(Ctr::drop_no_nexthop);
    if (complete_partial_l4_checksum(m, p)) t.inc(Ctr::csum_completed);
    if (p.ip_len > s.max_inner_len) [[unlikely]]
        return too_big(ctx, dev, m, p, s, s.inbound_tunnel(), false, t);
    if (!encapsulate(m, p, s.inbound_tunnel().tmpl)) return dropped(Ctr::drop_no_headroom);
    return {Ctr::inbound, ctx.shared->topo->link};
}

// Inbound: what the kernel sends toward a pod (out of that pod port's twin), whose
// destination is a meshed pod (`pod`): rule 103 / table 100 sends it into istioin unless a
// skip says otherwise, in the order of the kernel's chain.
Verdict to_pod_from_kernel(WorkerCtx& ctx, uint16_t port, rte_mbuf* m, const Parsed& p, bool pod,
                           const Snapshot& s, BurstTally& t) {
    if (!p.ipv4 || !pod) return {Ctr::pass, port};
    if (p.src == s.remote_ip) return {Ctr::skip_ztunnel, port}; // ztunnel's own connection
    if (p.proto == IPPROTO_UDP) return {Ctr::skip_udp, port};   // -p udp: 0x220 (Geneve too)
    FlowTable& ft = *ctx.shared->flows;
    const bool tcp = p.proto == IPPROTO_TCP && !p.fragment;
    if (p.src == s.local_ip) { // ztunnel-OUTPUT -s HOST_IP: 0x220, saved on the connection
        if (!tcp) return {Ctr::skip_host, port};
        const uint8_t f = tcp_flags(m, p);
        const auto r = ft.learn({p.src, p.dst, p.sport, p.dport}, ft.tick(rte_rdtsc()), is_syn(f),
                                (f & kFinRst) != 0, FlowKind::Host);
        if (r == FlowTable::Learn::Full) return dropped(Ctr::drop_flow_full);
        t.inc(r == FlowTable::Learn::Inserted ? Ctr::flow_insert : Ctr::flow_hit);
        return {Ctr::skip_host, port};
    }
    if (tcp && ft.connections() != 0 &&
        ft.touch({p.src, p.dst, p.sport, p.dport}, ft.tick(rte_rdtsc()),
                 (tcp_flags(m, p) & kFinRst) != 0) != FlowKind::None) {
        t.inc(Ctr::flow_hit);
        return {Ctr::skip_proxied, port}; // ztunnel's packet for a client, via the kernel
    }
    if (!s.redirects_inbound(p.proto)) return {Ctr::pass, port};
    return into_istioin(ctx, port, m, p, s, t);
}

// attach: xdp, the uplink port: the kernel's programs chose each frame (xdp_redirect.c's
// inbound: a meshed pod's address, a protocol of inbound.protocols, none of the skips, TTL
// above 1) before the kernel routed it; the routed hop table 100 makes is ztgeneve's (TTL - 1),
// then it goes into istioin as node_from_twin's inbound does. Not classified again: the
// device it arrived on is the kernel's whole decision.
Verdict inbound_from_xdp(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                         const Snapshot& s, BurstTally& t) {
    if (!p.ipv4 || !s.inbound) return dropped(Ctr::drop_no_twin); // never chosen
    auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, p.l3_off);
    if (ip->time_to_live <= 1) return dropped(Ctr::drop_no_twin); // the program passes these
    ipv4_decrement_ttl(ip);
    return into_istioin(ctx, dev, m, p, s, t);
}

} // namespace

void node_from_xdp_uplink(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    BurstTally t;
    for (uint16_t i = 0; i < n; i++) {
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        const Parsed p = parse_frame(pkts[i]);
        ctx.dispose(t, pkts[i], inbound_from_xdp(ctx, dev, pkts[i], p, s, t));
    }
    t.flush_to(ctx.ctr(dev));
}

// A twin's stage in the node role: a pods port's twin with inbound on classifies what the
// kernel sends toward the pods; every other twin passes it out of its port unchanged.
void node_from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    const Topology& topo = *ctx.shared->topo;
    const uint16_t port = topo.devs[dev].peer;
    if (!s.inbound || topo.devs[port].kind != DevKind::Pods) return from_twin(ctx, dev, pkts, n);
    Parsed p[kBurst];
    Ip4 dst[kBurst];
    for (uint16_t i = 0; i < n; i++) {
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        p[i] = parse_frame(pkts[i]);
        dst[i] = p[i].dst; // 0.0.0.0 for non-IPv4: never a pod
    }
    const uint64_t is_pod = ctx.shared->pods->lookup_bulk(dst, n);
    BurstTally t;
    for (uint16_t i = 0; i < n; i++)
        ctx.dispose(t, pkts[i],
                    to_pod_from_kernel(ctx, port, pkts[i], p[i], (is_pod >> i) & 1, s, t));
    t.flush_to(ctx.ctr(dev));
}

void node_tick(WorkerCtx& ctx) {
    resolve_peer_tick(ctx);
}

const Pipeline& node_pipeline() {
    static const Pipeline p = [] {
        Pipeline q;
        q.stage[size_t(DevKind::Pods)] = node_from_pods;
        q.stage[size_t(DevKind::Ztunnel)] = node_from_ztunnel;
        q.stage[size_t(DevKind::XdpPods)] = node_from_xdp_pods;
        q.stage[size_t(DevKind::XdpZtunnel)] = node_from_ztunnel; // the kernel passes only Geneve
        q.stage[size_t(DevKind::XdpUplink)] = node_from_xdp_uplink;
        q.stage[size_t(DevKind::Twin)] = node_from_twin;
        q.tick = node_tick;
        return q;
    }();
    return p;
}

} // namespace ztg
