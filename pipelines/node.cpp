#include "pipelines/node.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

#include <rte_cycles.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_prefetch.h>

#include "dataplane/decap.hpp"
#include "dataplane/fragment.hpp"
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
    eth->src_addr = s.link_mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    return true;
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
// split into fragments that each fit (tunnel.too_big: fragment) or dropped (drop). m is
// consumed. Fragments share the packet's flow hash, so they take the same path.
[[gnu::noinline]] void too_big(WorkerCtx& ctx, uint16_t dev, rte_mbuf* m, const Parsed& p,
                               const Snapshot& s, BurstTally& t) {
    static_assert(RTE_PKTMBUF_HEADROOM >= EncapTemplate::kSize, "fragments need the headroom");
    if (p.df || !s.fragment) {
        t.inc(Ctr::drop_too_big);
        if (p.df) t.inc(send_frag_needed(ctx, dev, m, p, s));
        rte_pktmbuf_free(m);
        return;
    }
    rte_mbuf* frags[kMaxFragments];
    const Fragments f = fragment_ipv4(m, p, s.max_inner_len, ctx.shared->pool, frags);
    rte_pktmbuf_free(m);
    if (f.n == 0) {
        t.inc(f.no_mbuf      ? Ctr::drop_no_mbuf
              : f.bad_header ? Ctr::drop_bad_header
                             : Ctr::drop_too_big);
        return;
    }
    const uint16_t sport = flow_source_port(p);
    for (uint16_t k = 0; k < f.n; k++) {
        push_tunnel_headers(frags[k], s.tmpl, EncapTemplate::kSize, p.tos & RTE_IPV4_HDR_ECN_MASK,
                            sport); // a fresh mbuf: the headroom is there
        ctx.send(ctx.shared->topo->link, frags[k]);
    }
    t.inc(Ctr::fragmented);
    t.inc(Ctr::fragments, f.n);
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
// `default via 192.168.127.1 dev pistioout` needs it): answered as istioout would, back
// through the tunnel. Returns nothing if m is not such a request, else tunnel_arp_reply
// (sent) or drop_no_headroom (m to be freed).
std::optional<Ctr> answer_tunnel_arp(WorkerCtx& ctx, rte_mbuf* m, uint16_t inner_off,
                                     const Snapshot& s) {
    auto* b = rte_pktmbuf_mtod(m, uint8_t*);
    if (m->data_len < inner_off + sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return {};
    auto* eth = reinterpret_cast<rte_ether_hdr*>(b + inner_off);
    if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return {};
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    uint32_t tip;
    std::memcpy(&tip, &arp->arp_data.arp_tip, 4);
    if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) || tip != s.inner_ip.raw ||
        arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)
        return {};
    const rte_ether_addr asker = arp->arp_data.arp_sha;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    arp->arp_data.arp_tha = asker;
    std::memcpy(&arp->arp_data.arp_tip, &arp->arp_data.arp_sip, 4);
    arp->arp_data.arp_sha = s.inner_mac;
    std::memcpy(&arp->arp_data.arp_sip, &s.inner_ip.raw, 4);
    rte_pktmbuf_adj(m, uint16_t(inner_off + sizeof(rte_ether_hdr)));
    truncate(m, sizeof(rte_arp_hdr));
    if (!push_tunnel_headers(m, s.tmpl, EncapTemplate::kSize, 0, 0xC000))
        return Ctr::drop_no_headroom;
    auto* inner = rte_pktmbuf_mtod_offset(m, rte_ether_hdr*, kOuterLen);
    inner->dst_addr = asker;
    inner->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
    ctx.send(ctx.shared->topo->link, m);
    return Ctr::tunnel_arp_reply;
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
// where it is) or answers with ICMP. Returns the counter that tells what happened; m was
// sent when it is decap, decap_unknown_pod or tunnel_arp_reply, else it is the caller's to free.
Ctr deliver_to_pod(WorkerCtx& ctx, rte_mbuf* m, const GeneveView& g, const Snapshot& s) {
    if (g.vni != s.vni) return Ctr::decap_bad_vni;
    if (auto arp = answer_tunnel_arp(ctx, m, g.inner_off, s)) return *arp;
    auto* b = rte_pktmbuf_mtod(m, uint8_t*);
    const uint32_t avail = g.outer_end - g.inner_off; // the outer datagram bounds the inner frame
    const auto* eth = reinterpret_cast<const rte_ether_hdr*>(b + g.inner_off);
    if (avail < sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) ||
        eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
        return Ctr::decap_bad_inner;
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(b + g.inner_off + sizeof(rte_ether_hdr));
    const uint32_t ihl = (ip->version_ihl & 0x0f) * 4u;
    const uint32_t total = rte_be_to_cpu_16(ip->total_length);
    if ((ip->version_ihl >> 4) != 4 || ihl < 20 || total < ihl ||
        total > avail - sizeof(rte_ether_hdr))
        return Ctr::decap_bad_inner;
    if (!ecn_decapsulate(g.outer_ecn, reinterpret_cast<uint8_t*>(ip))) return Ctr::decap_ecn_drop;
    const uint32_t frame = sizeof(rte_ether_hdr) + total;
    const PodLocation loc = ctx.shared->pods->location(Ip4{ip->dst_addr});
    if (!loc.known() || ip->time_to_live <= 1) {
        const uint16_t twin = ctx.shared->topo->devs[ctx.shared->topo->link].peer;
        if (twin == kNoDev) return Ctr::drop_no_twin;
        strip_to_inner(m, g.inner_off, frame, ctx.shared->topo->devs[twin].mac, s.nexthop_mac);
        ctx.send(twin, m);
        return Ctr::decap_unknown_pod;
    }
    ip->time_to_live--;
    uint32_t sum = uint32_t(rte_be_to_cpu_16(ip->hdr_checksum)) + 0x0100;
    ip->hdr_checksum = rte_cpu_to_be_16(uint16_t(sum + (sum >> 16)));
    strip_to_inner(m, g.inner_off, frame, loc.mac(), ctx.shared->topo->devs[loc.dev()].mac);
    ctx.send(loc.dev(), m);
    return Ctr::decap;
}

} // namespace

void node_from_pods(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const Snapshot& s = *ctx.snap;
    const uint16_t zt = ctx.shared->topo->link;
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
        rte_mbuf* m = pkts[i];
        const bool pod = p[i].ipv4 && ((is_pod >> i) & 1);
        if (pod)
            note_pod(ctx, p[i].src, tag[i], dev, rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr);
        // The kernel's mark rule: -p <proto> -m set --match-set ztunnel-pods-ips src.
        if (!pod || !s.redirects(p[i].proto)) {
            if (!p[i].ipv4)
                if (const rte_arp_hdr* arp = arp_of(m);
                    arp != nullptr) { // a pod's ARP: learn it too
                    const Ip4 sip = arp_sender_ip(arp);
                    uint32_t known;
                    if (ctx.shared->pods->lookup_bulk(&sip, 1, &known) != 0)
                        note_pod(ctx, sip, known, dev, arp->arp_data.arp_sha);
                }
            to_twin(ctx, dev, m, t);
            continue;
        }
        if (!s.nexthop_known) {
            t.inc(Ctr::drop_no_nexthop);
            rte_pktmbuf_free(m);
            continue;
        }
        if (p[i].dst == s.remote_ip) { // table 101: ZT_IP dev <veth> scope link
            if (forward_direct(m, p[i], s)) {
                t.inc(Ctr::direct);
                ctx.send(zt, m);
            } else {
                to_twin(ctx, dev, m, t);
            }
            continue;
        }
        if (p[i].ip_len > s.max_inner_len) [[unlikely]] {
            too_big(ctx, dev, m, p[i], s, t);
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
        if (i + kPrefetchAhead < n)
            rte_prefetch0(rte_pktmbuf_mtod(pkts[i + kPrefetchAhead], void*));
        rte_mbuf* m = pkts[i];
        snoop_peer_arp(ctx, m);
        const GeneveView g = inspect_geneve(m, s.decap);
        if (g.verdict == Tunnel::NotOurs) { // ztunnel's own traffic, ARP: the kernel's
            to_twin(ctx, dev, m, t);
            continue;
        }
        const Ctr c = g.verdict == Tunnel::Drop ? g.reason : deliver_to_pod(ctx, m, g, s);
        t.inc(c);
        if (c != Ctr::decap && c != Ctr::tunnel_arp_reply && c != Ctr::decap_unknown_pod)
            rte_pktmbuf_free(m);
    }
    t.flush_to(ctx.ctr(dev));
}

void from_twin(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n) {
    const uint16_t port = ctx.shared->topo->devs[dev].peer;
    for (uint16_t i = 0; i < n; i++) ctx.send(port, pkts[i]);
    ctx.ctr(dev).add(Ctr::pass, n);
}

void node_tick(WorkerCtx& ctx) {
    resolve_peer_tick(ctx);
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
