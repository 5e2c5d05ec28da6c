// fuzz_node_pods: the node role's pods-port stage (node_from_pods) over a burst of up to
// 32 fuzzed frames (format: fuzz_support.hpp). Every frame's fate is predicted from the
// README's table (pass / direct / redirect / a counted drop) and checked, as is every
// output byte: a pass leaves the frame unchanged, a direct frame is the packet (no padding) with
// new MACs and TTL - 1, a redirect is the template's 64 bytes followed by exactly the IPv4 packet,
// never larger than the tunnel MTU; a too-big packet without DF leaves as fragments, each in its
// own Geneve frame within the MTU, that put together give the packet. A TCP/UDP checksum left
// partial (the pseudo-header sum, as a pod's kernel hands it over with tx offload on) is completed
// first, whatever the fate. No mbuf leaks or is sent twice; the device's counters account for every
// frame. Each burst runs through both paths of the stage (ctx.vector_path), each checked
// so, and then the two against each other: the same frames, byte for byte, counters and events.
//
// mode bits: 0 next hop unknown, 1 pods port without a twin, 2 low headroom (32 bytes),
// 3 UDP redirected too, 4 tunnel MTU 150 (inner packets of at most 100 bytes), 5 outer UDP
// checksum on, 6 too-big packets dropped, not fragmented (tunnel.too_big: drop), 7 DNS
// capture on (inbound.dns_capture) with a fresh flow table of 8 entries for each path: a
// meshed pod's UDP/53 rewritten to ZT_IP:15053 (bytes and checksums checked), the table's
// inserts, hits and its full state predicted from a model of its own.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>

#include <rte_mempool.h>

#include "dataplane/flow_table.hpp"
#include "dataplane/fragment.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/node.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::fuzz;
using ztg::test::Harness;

namespace {

Harness* g_h = nullptr;
Snapshot g_base;

const Ip4 kPodIps[] = {ip4(10, 244, 2, 3), ip4(10, 244, 2, 2), ip4(10, 244, 2, 7),
                       ip4(10, 244, 2, 5), ip4(10, 244, 2, 8)};

enum class Fate { Pass, Direct, Redirect, Fragments, Drop, Dns };

// The flow table as DNS capture fills it: the captured (pod, port) keys, and how many of
// them each bucket holds (FlowTable::bucket_index: a full bucket is a full table).
struct DnsModel {
    const FlowTable* t = nullptr;
    std::map<std::pair<uint32_t, uint16_t>, uint32_t> keys; // -> bucket
    std::map<uint32_t, uint32_t> per_bucket;
    uint64_t inserts = 0, hits = 0;
};

struct Expect {
    Fate fate = Fate::Pass;
    Ctr ctr = Ctr::pass;
    uint32_t frags = 0; // Fragments: how many
};

// RFC 791: how many fragments of at most max_len bytes (within a 2048-byte buffer) the
// packet makes, or 0 if it cannot be split (fragment_ipv4's documented limits).
uint32_t fragment_count(const Parsed& p, const std::vector<uint8_t>& b, uint32_t max_len) {
    const uint32_t ihl = (b[p.l3_off] & 0x0f) * 4u;
    const uint32_t limit = std::min<uint32_t>(max_len, RTE_MBUF_DEFAULT_DATAROOM);
    if (limit < ihl + 8) return 0;
    const uint32_t unit = (limit - ihl) / 8 * 8, payload = p.ip_len - ihl;
    const uint32_t n = (payload + unit - 1) / unit;
    const uint32_t offset = be16(b, p.l3_off + 6) & 0x1fff;
    return n > kMaxFragments || offset + (payload - 1) / 8 > 0x1fff ? 0 : n;
}

Expect predict(const Parsed& p, const Snapshot& s, bool has_twin, uint16_t headroom,
               const std::vector<uint8_t>& b, DnsModel& dns) {
    const Expect pass =
        has_twin ? Expect{Fate::Pass, Ctr::pass} : Expect{Fate::Drop, Ctr::drop_no_twin};
    bool pod = false;
    for (Ip4 ip : kPodIps) pod |= p.ipv4 && p.src == ip;
    // DNS capture, before the mark rule: a whole UDP header, TTL > 1, a next hop, room.
    if (s.dns_capture && pod && p.proto == 17 && !p.fragment && p.dport.host() == 53) {
        if (p.l3_off + uint32_t(p.ip_len) < p.l4_off + 8u || b[p.l3_off + 8] <= 1) return pass;
        if (!s.nexthop_known) return {Fate::Drop, Ctr::drop_no_nexthop};
        const auto key = std::make_pair(p.src.raw, p.sport.raw);
        if (dns.keys.count(key)) {
            dns.hits++;
        } else {
            const uint32_t bucket = dns.t->bucket_index(dns_key(s.remote_ip, p.src, p.sport));
            if (dns.keys.size() >= dns.t->capacity() || dns.per_bucket[bucket] >= FlowTable::kWays)
                return has_twin ? Expect{Fate::Pass, Ctr::dns_flow_full}
                                : Expect{Fate::Drop, Ctr::drop_no_twin};
            dns.keys[key] = bucket;
            dns.per_bucket[bucket]++;
            dns.inserts++;
        }
        return {Fate::Dns, Ctr::dns_capture};
    }
    if (!pod || !s.redirects(p.proto)) return pass;
    if (!s.nexthop_known) return {Fate::Drop, Ctr::drop_no_nexthop};
    if (p.dst == s.remote_ip)
        return b[p.l3_off + 8] <= 1 ? pass : Expect{Fate::Direct, Ctr::direct};
    if (p.ip_len > s.max_inner_len) {
        if (!p.df && s.fragment && !ip_checksum_ok(b, p.l3_off, (b[p.l3_off] & 0x0f) * 4u))
            return {Fate::Drop, Ctr::drop_bad_header};
        const uint32_t n = p.df || !s.fragment ? 0 : fragment_count(p, b, s.max_inner_len);
        return n == 0 ? Expect{Fate::Drop, Ctr::drop_too_big}
                      : Expect{Fate::Fragments, Ctr::fragmented, n};
    }
    if (headroom + p.l3_off < EncapTemplate::kSize) return {Fate::Drop, Ctr::drop_no_headroom};
    return {Fate::Redirect, Ctr::redirect};
}

// The UDP checksum of the IPv4 packet at l3 of b (IHL from its header) verifies.
bool inner_udp_checksum_ok(const std::vector<uint8_t>& b, size_t l3, size_t ip_len) {
    const size_t l4 = l3 + (b[l3] & 0x0f) * 4u, end = l3 + ip_len;
    uint32_t sum = 17 + uint32_t(end - l4);
    for (size_t i = l3 + 12; i < l3 + 20; i += 2) sum += be16(b, i);
    for (size_t i = l4; i < end; i += 2) sum += uint32_t(b[i]) << 8 | (i + 1 < end ? b[i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

// A captured query: one routed hop to ztunnel, the destination ZT_IP:15053, nothing else
// changed but the checksums, which stay right (a UDP checksum of 0 stays 0).
void check_dns(const std::vector<uint8_t>& in, const Parsed& p, const std::vector<uint8_t>& o,
               const Snapshot& s, const std::string& what) {
    const std::string ctx = what + " out " + hex(o.data(), std::min<size_t>(o.size(), 64));
    const size_t l3 = p.l3_off, ihl = (in[l3] & 0x0f) * 4u, l4 = 14 + ihl;
    FUZZ_CHECK(o.size() == 14u + p.ip_len, ctx + ": length (padding kept?)");
    FUZZ_CHECK(std::memcmp(o.data(), s.nexthop_mac.addr_bytes, 6) == 0 &&
                   std::memcmp(o.data() + 6, s.link_mac.addr_bytes, 6) == 0 &&
                   be16(o, 12) == 0x0800,
               ctx + ": Ethernet header");
    FUZZ_CHECK(be32(o, 30) == s.remote_ip.host() && be16(o, l4 + 2) == 15053,
               ctx + ": not to ZT_IP:15053");
    FUZZ_CHECK(o[22] + 1 == in[l3 + 8], ctx + ": TTL not decremented by one");
    for (size_t i = 14; i < o.size(); i++) {
        const size_t r = i - 14;
        if (r == 8 || r == 10 || r == 11 || (r >= 16 && r < 20) || i == l4 + 2 || i == l4 + 3 ||
            i == l4 + 6 || i == l4 + 7)
            continue;
        FUZZ_CHECK(o[i] == in[l3 + r], ctx + ": byte " + std::to_string(i) + " changed");
    }
    if (ip_checksum_ok(in, l3, ihl))
        FUZZ_CHECK(ip_checksum_ok(o, 14, ihl), ctx + ": IPv4 checksum");
    if (be16(in, l3 + ihl + 6) == 0)
        FUZZ_CHECK(be16(o, l4 + 6) == 0, ctx + ": no UDP checksum became one");
    else if (inner_udp_checksum_ok(in, l3, p.ip_len))
        FUZZ_CHECK(be16(o, l4 + 6) != 0 && inner_udp_checksum_ok(o, 14, p.ip_len),
                   ctx + ": UDP checksum broken");
}

bool udp_checksum_ok(const std::vector<uint8_t>& o) {
    uint32_t sum = 0;
    for (size_t i = 26; i < 34; i += 2) sum += uint32_t(o[i]) << 8 | o[i + 1];
    sum += 17 + be16(o, 38);
    for (size_t i = 34; i < o.size(); i += 2)
        sum += uint32_t(o[i]) << 8 | (i + 1 < o.size() ? o[i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum == 0xffff;
}

// chained: the input was a multi-segment mbuf.
void check_redirect(const std::vector<uint8_t>& in, const Parsed& p, const std::vector<uint8_t>& o,
                    const Snapshot& s, bool chained, const std::string& what) {
    const std::string ctx = what + " out " + hex(o.data(), std::min<size_t>(o.size(), 96));
    // Known issue trim-chain: encapsulate ignores rte_pktmbuf_trim's failure on a chain
    // whose bytes past the IPv4 packet span more than the last segment.
    if (!(chained && o.size() > EncapTemplate::kSize + p.ip_len && known_issue("trim-chain"))) {
        FUZZ_CHECK(o.size() == EncapTemplate::kSize + p.ip_len,
                   ctx + ": length " + std::to_string(o.size()) + ", want 64 + ip_len " +
                       std::to_string(p.ip_len));
        FUZZ_CHECK(o.size() - 14 <= size_t(s.max_inner_len) + kOuterLen,
                   ctx + ": exceeds the tunnel MTU");
    }
    FUZZ_CHECK(o.size() >= EncapTemplate::kSize + p.ip_len, ctx + ": shorter than the packet");
    if (s.outbound().tmpl.udp_checksum && !(chained && known_issue("dpdk-cksum-mbuf")))
        FUZZ_CHECK(udp_checksum_ok(o), ctx + ": UDP checksum");
    else if (!s.outbound().tmpl.udp_checksum)
        FUZZ_CHECK(be16(o, 40) == 0, ctx + ": UDP checksum not 0");
    static const uint8_t kDst[6] = {0x02, 0, 0, 0, 0x02, 0x0a};
    FUZZ_CHECK(std::memcmp(o.data(), kDst, 6) == 0, ctx + ": outer destination MAC");
    FUZZ_CHECK(std::memcmp(o.data() + 6, s.link_mac.addr_bytes, 6) == 0,
               ctx + ": outer source MAC");
    FUZZ_CHECK(be16(o, 12) == 0x0800 && o[14] == 0x45, ctx + ": outer IPv4");
    FUZZ_CHECK(be16(o, 16) == o.size() - 14, ctx + ": outer total length");
    FUZZ_CHECK(o[15] == (p.tos & 3), ctx + ": outer TOS is not the inner ECN");
    FUZZ_CHECK(o[22] == 64 && o[23] == 17 && be16(o, 20) == 0x4000, ctx + ": TTL/proto/DF");
    FUZZ_CHECK(ip_checksum_ok(o, 14, 20), ctx + ": outer IPv4 checksum");
    FUZZ_CHECK(be32(o, 26) == s.local_ip.host() && be32(o, 30) == s.remote_ip.host(),
               ctx + ": outer addresses");
    FUZZ_CHECK(be16(o, 34) >= 0xC000, ctx + ": UDP source port out of 49152-65535");
    FUZZ_CHECK(be16(o, 34) == flow_source_port(p), ctx + ": UDP source port is not the flow hash");
    FUZZ_CHECK(be16(o, 36) == 6081, ctx + ": UDP destination port");
    FUZZ_CHECK(be16(o, 38) == o.size() - 34, ctx + ": UDP length");
    FUZZ_CHECK(o[42] == 0 && o[43] == 0 && be16(o, 44) == 0x6558, ctx + ": Geneve header");
    FUZZ_CHECK(be32(o, 46) == (1001u << 8), ctx + ": VNI");
    FUZZ_CHECK(std::memcmp(o.data() + 50, s.outbound().tmpl.bytes.data() + 50, 14) == 0,
               ctx + ": inner Ethernet");
    FUZZ_CHECK(std::memcmp(o.data() + 64, in.data() + p.l3_off, p.ip_len) == 0,
               ctx + ": inner IPv4 packet changed");
}

// The options a later fragment carries (RFC 791 3.1): those with the copied flag, padded
// with End of Options to a multiple of 4; a packet that is itself a later fragment keeps
// its own. NOP is not copied; a malformed option ends the list.
std::vector<uint8_t> later_options(const std::vector<uint8_t>& in, size_t l3, size_t ihl,
                                   uint16_t fo) {
    if ((fo & 0x1fff) != 0) return {in.begin() + long(l3 + 20), in.begin() + long(l3 + ihl)};
    std::vector<uint8_t> o;
    for (size_t i = l3 + 20, end = l3 + ihl; i < end;) {
        if (in[i] == 1) {
            i++;
            continue;
        }
        if (in[i] == 0 || i + 1 >= end || in[i + 1] < 2 || i + in[i + 1] > end) break;
        if (in[i] & 0x80) o.insert(o.end(), in.begin() + long(i), in.begin() + long(i + in[i + 1]));
        i += in[i + 1];
    }
    o.resize((o.size() + 3) / 4 * 4, 0);
    return o;
}

// The Geneve frames a too-big packet left as: each within the MTU, the outer headers of a
// redirect with the packet's flow hash, an inner IPv4 fragment whose header is the
// packet's but for length, offset, MF, checksum and (after the first) the options; their
// payloads in order are the packet's.
void check_fragments(const std::vector<uint8_t>& in, const Parsed& p,
                     const std::vector<std::vector<uint8_t>>& frags, const Snapshot& s,
                     const std::string& what) {
    const size_t l3 = p.l3_off, ihl = (in[l3] & 0x0f) * 4u;
    const uint16_t fo = be16(in, l3 + 6);
    const std::vector<uint8_t> first(in.begin() + long(l3 + 20), in.begin() + long(l3 + ihl));
    const std::vector<uint8_t> later = later_options(in, l3, ihl, fo);
    std::vector<uint8_t> whole;
    for (size_t k = 0; k < frags.size(); k++) {
        const auto& o = frags[k];
        const std::vector<uint8_t>& opts = k == 0 ? first : later;
        const size_t hk = 20 + opts.size();
        const std::string ctx = what + " fragment " + std::to_string(k) + " " +
                                hex(o.data(), std::min<size_t>(o.size(), 96));
        FUZZ_CHECK(o.size() >= 64 + hk && o.size() - 14 <= size_t(s.max_inner_len) + kOuterLen,
                   ctx + ": size");
        FUZZ_CHECK(be16(o, 16) == o.size() - 14 && ip_checksum_ok(o, 14, 20), ctx + ": outer IPv4");
        FUZZ_CHECK(be16(o, 34) == flow_source_port(p),
                   ctx + ": UDP source port is not the packet's");
        FUZZ_CHECK(be16(o, 38) == o.size() - 34 && be32(o, 46) == (1001u << 8), ctx + ": UDP/VNI");
        FUZZ_CHECK(std::memcmp(o.data() + 50, s.outbound().tmpl.bytes.data() + 50, 14) == 0,
                   ctx + ": inner Ethernet");
        FUZZ_CHECK(o[64] == 0x40 + hk / 4 && be16(o, 66) == o.size() - 64, ctx + ": inner length");
        FUZZ_CHECK(ip_checksum_ok(o, 64, hk), ctx + ": inner checksum");
        const uint16_t f = be16(o, 70);
        const bool last = k + 1 == frags.size();
        FUZZ_CHECK((f & 0x1fff) * 8u == (fo & 0x1fff) * 8u + whole.size(), ctx + ": offset");
        FUZZ_CHECK((f & 0xe000) == (last ? (fo & 0x2000) : 0x2000), ctx + ": flags");
        FUZZ_CHECK(last || (o.size() - 64 - hk) % 8 == 0, ctx + ": not in 8-byte units");
        FUZZ_CHECK(o[65] == in[l3 + 1] && std::memcmp(o.data() + 68, in.data() + l3 + 4, 2) == 0 &&
                       std::memcmp(o.data() + 72, in.data() + l3 + 8, 2) == 0 &&
                       std::memcmp(o.data() + 76, in.data() + l3 + 12, 8) == 0,
                   ctx + ": inner header changed");
        FUZZ_CHECK(std::equal(opts.begin(), opts.end(), o.begin() + 84), ctx + ": options");
        whole.insert(whole.end(), o.begin() + long(64 + hk), o.end());
    }
    FUZZ_CHECK(whole.size() == p.ip_len - ihl &&
                   std::memcmp(whole.data(), in.data() + l3 + ihl, whole.size()) == 0,
               what + ": fragments do not put the packet together");
}

void check_direct(const std::vector<uint8_t>& in, const Parsed& p, const std::vector<uint8_t>& o,
                  const Snapshot& s, const std::string& what) {
    const std::string ctx = what + " out " + hex(o.data(), std::min<size_t>(o.size(), 64));
    FUZZ_CHECK(o.size() == 14u + p.ip_len, ctx + ": length (padding kept?)");
    FUZZ_CHECK(std::memcmp(o.data(), s.nexthop_mac.addr_bytes, 6) == 0 &&
                   std::memcmp(o.data() + 6, s.link_mac.addr_bytes, 6) == 0 &&
                   be16(o, 12) == 0x0800,
               ctx + ": Ethernet header");
    FUZZ_CHECK(be32(o, 30) == s.remote_ip.host(), ctx + ": not to the ztunnel IP");
    FUZZ_CHECK(o[22] + 1 == in[p.l3_off + 8], ctx + ": TTL not decremented by one");
    const size_t ihl = (in[p.l3_off] & 0x0f) * 4u;
    if (ip_checksum_ok(in, p.l3_off, ihl))
        FUZZ_CHECK(ip_checksum_ok(o, 14, ihl), ctx + ": checksum broken");
    for (size_t i = 14; i < o.size(); i++) {
        if (i == 22 || i == 24 || i == 25) continue;
        FUZZ_CHECK(o[i] == in[p.l3_off + i - 14], ctx + ": byte " + std::to_string(i) + " changed");
    }
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    ztg::test::eal_once();
    g_h = new Harness(64, true);
    for (Ip4 ip : kPodIps)
        if (!g_h->pods->add(ip)) std::abort();
    g_h->pods->set_location(kPodIps[0],
                            PodLocation::of(Harness::kPods, {{0x02, 0, 0, 0, 0x02, 0x03}}));
    g_h->pods->set_location(kPodIps[1],
                            PodLocation::of(Harness::kPods, {{0x02, 0, 0, 0, 0x02, 0x02}}));
    g_base = g_h->snap;
    return 0;
}

namespace {

// What one path made of a burst: per frame the device it left by (-1: none) and its bytes,
// the frames the stage made, per device, the pods port's counters and the events posted.
struct Outcome {
    std::vector<int> dev;
    std::vector<std::vector<uint8_t>> out;
    std::vector<std::vector<std::vector<uint8_t>>> made;
    std::vector<uint64_t> ctr;
    std::vector<std::pair<uint32_t, uint16_t>> events; // PodSeen: ip, device
    bool operator==(const Outcome&) const = default;
};

// Runs the burst through node_from_pods on one path (vector: ctx.vector_path) and checks
// every frame's fate and bytes against the model.
Outcome run_path(const BurstInput& in, bool vector) {
    Harness& h = *g_h;
    Snapshot s = g_base;
    // DNS capture: a table of its own for each run, so both paths start from the same.
    FlowTable flows("fz_dns", 8, *h.rcu);
    DnsModel dns;
    dns.t = &flows;
    h.shared.flows = &flows;
    if (in.mode & 128) {
        s.inbound = true;
        s.dns_capture = true;
    }
    if (in.mode & 1) s.nexthop_known = false;
    if (in.mode & 8) s.set_redirect(17);
    if (in.mode & 16) s.max_inner_len = 100;
    if (in.mode & 32) s.tunnels[0].tmpl.udp_checksum = true;
    if (in.mode & 64) s.fragment = false;
    h.set_snapshot(s);
    const bool twin = !(in.mode & 2);
    h.topo.devs[Harness::kPods].peer = twin ? Harness::kPodsTwin : kNoDev;
    const uint16_t headroom = (in.mode & 4) ? kLowHeadroom : RTE_PKTMBUF_HEADROOM;
    reset_counters(h.counters);
    h.ctx.pod_seen = {};
    h.ctx.icmp_tokens = 0; // a full bucket for each run: the two paths see the same
    h.ctx.icmp_tokens_tsc = 0;
    h.ctx.vector_path = vector;
    Outcome res;

    const unsigned base = rte_mempool_in_use_count(h.pool);
    Tracker tr;
    std::vector<rte_mbuf*> pkts;
    std::vector<Parsed> parsed;
    std::vector<Expect> want;
    std::vector<bool> chained;
    std::vector<std::vector<uint8_t>> meant; // each frame with its partial checksum completed
    uint64_t completed = 0;
    for (const Record& r : in.frames) {
        rte_mbuf* m = make_mbuf(h.pool, r, headroom);
        chained.push_back(m->nb_segs > 1);
        check_mbuf(m, "input");
        std::vector<uint8_t> b(r.data, r.data + r.len);
        parsed.push_back(parse_frame(m));
        meant.push_back(b);
        completed += complete_partial_model(meant.back(), parsed.back());
        want.push_back(predict(parsed.back(), s, twin, headroom, meant.back(), dns));
        tr.add(m, std::move(b));
        pkts.push_back(m);
    }
    const uint16_t n = uint16_t(pkts.size());
    node_from_pods(h.ctx, Harness::kPods, pkts.data(), n);
    h.events.consume_all([&](const Event& e) { res.events.emplace_back(e.ip.raw, e.dev); });
    tr.collect(h.ctx, true);
    for (uint16_t i = 0; i < n; i++) {
        res.dev.push_back(tr.in[i].out_dev);
        res.out.push_back(tr.in[i].out_dev < 0 ? std::vector<uint8_t>{} : bytes_of(pkts[i]));
    }
    for (const auto& d : tr.extra) {
        res.made.emplace_back();
        for (rte_mbuf* r : d) res.made.back().push_back(bytes_of(r));
    }
    for (size_t k = 0; k < kNumCtr; k++) res.ctr.push_back(h.counters[Harness::kPods].get(Ctr(k)));

    const DeviceCounters& c = h.counters[Harness::kPods];
    FUZZ_CHECK(verdict_sum(c) == n, "counters account for " + std::to_string(verdict_sum(c)) +
                                        " of " + std::to_string(n) + " frames: " + counters_str(c));
    for (uint16_t d = 0; d < h.counters.size(); d++)
        if (d != Harness::kPods)
            FUZZ_CHECK(verdict_sum(h.counters[d]) == 0, "counted on another device");
    uint64_t want_ctr[kNumCtr] = {};
    for (uint16_t i = 0; i < n; i++) {
        const Expect& e = want[i];
        want_ctr[size_t(e.ctr)]++;
        const auto& rec = tr.in[i];
        const std::string what = "frame " + std::to_string(i) + " " +
                                 hex(rec.bytes.data(), std::min<size_t>(rec.bytes.size(), 64));
        const int dev = e.fate == Fate::Pass                                ? Harness::kPodsTwin
                        : e.fate == Fate::Drop || e.fate == Fate::Fragments ? -1
                                                                            : Harness::kZt;
        FUZZ_CHECK(rec.out_dev == dev, what + ": sent to device " + std::to_string(rec.out_dev) +
                                           ", expected " + std::to_string(dev) + " (" +
                                           kCtrName[size_t(e.ctr)] + ")");
        if (dev < 0) continue;
        const std::vector<uint8_t> o = bytes_of(pkts[i]);
        if (e.fate == Fate::Pass)
            FUZZ_CHECK(o == meant[i], what + ": passed frame changed");
        else if (e.fate == Fate::Direct)
            check_direct(meant[i], parsed[i], o, s, what);
        else if (e.fate == Fate::Dns)
            check_dns(meant[i], parsed[i], o, s, what);
        else
            check_redirect(meant[i], parsed[i], o, s, chained[i], what);
    }
    // Mbufs the stage made: fragments to ztunnel, in the order of the packets they were cut
    // from; ICMP fragmentation-needed to a pod, out of its port.
    size_t next_frag = 0;
    uint64_t frags = 0;
    const auto& made =
        tr.extra.size() > Harness::kZt ? tr.extra[Harness::kZt] : std::vector<rte_mbuf*>{};
    for (uint16_t i = 0; i < n; i++) {
        if (want[i].fate != Fate::Fragments) continue;
        FUZZ_CHECK(next_frag + want[i].frags <= made.size(), "fewer fragments than expected");
        std::vector<std::vector<uint8_t>> f;
        for (uint32_t k = 0; k < want[i].frags; k++) f.push_back(bytes_of(made[next_frag++]));
        check_fragments(meant[i], parsed[i], f, s, "frame " + std::to_string(i));
        frags += want[i].frags;
    }
    FUZZ_CHECK(next_frag == made.size(), "more fragments than expected");
    FUZZ_CHECK(c.get(Ctr::csum_completed) == completed,
               "csum_completed " + std::to_string(c.get(Ctr::csum_completed)) + ", expected " +
                   std::to_string(completed));
    FUZZ_CHECK(c.get(Ctr::fragments) == frags, "fragments counter");
    FUZZ_CHECK(c.get(Ctr::flow_insert) == dns.inserts && c.get(Ctr::flow_hit) == dns.hits &&
                   flows.size() == dns.keys.size(),
               "flow table: " + std::to_string(c.get(Ctr::flow_insert)) + " inserts, " +
                   std::to_string(c.get(Ctr::flow_hit)) + " hits, " + std::to_string(flows.size()) +
                   " entries; the model " + std::to_string(dns.inserts) + ", " +
                   std::to_string(dns.hits) + ", " + std::to_string(dns.keys.size()));
    uint64_t icmp = 0;
    for (uint16_t d = 0; d < tr.extra.size(); d++)
        for (rte_mbuf* r : tr.extra[d]) {
            if (d == Harness::kZt) continue;
            const std::vector<uint8_t> o = bytes_of(r);
            const std::string ctx = "allocated " + hex(o.data(), std::min<size_t>(o.size(), 80));
            FUZZ_CHECK(d == Harness::kPods, ctx + ": sent out of device " + std::to_string(d));
            FUZZ_CHECK(o.size() >= 14 + 20 + 8 && be16(o, 12) == 0x0800 && o[14] == 0x45 &&
                           o[23] == 1,
                       ctx + ": not ICMP over IPv4");
            FUZZ_CHECK(be16(o, 16) == o.size() - 14 && ip_checksum_ok(o, 14, 20),
                       ctx + ": IPv4 length/checksum");
            FUZZ_CHECK(o[34] == 3 && o[35] == 4 && be16(o, 40) == s.max_inner_len,
                       ctx + ": not fragmentation-needed with the tunnel's MTU");
            bool to_pod = false;
            for (Ip4 ip : kPodIps) to_pod |= be32(o, 30) == ip.host();
            FUZZ_CHECK(to_pod, ctx + ": to no pod");
            std::vector<uint8_t> icmp_part(o.begin() + 34, o.end());
            if (icmp_part.size() % 2) icmp_part.push_back(0);
            FUZZ_CHECK(ip_checksum_ok(icmp_part, 0, icmp_part.size()), ctx + ": ICMP checksum");
            icmp++;
        }
    for (size_t k = 0; k < kNumCtr; k++)
        if (std::strcmp(kCtrName[k], "icmp_frag_needed") == 0)
            FUZZ_CHECK(c.get(Ctr(k)) == icmp, "icmp_frag_needed counter vs ICMP sent");
    for (size_t k = 0; k < kNumCtr; k++)
        if (is_verdict(Ctr(k)))
            FUZZ_CHECK(c.get(Ctr(k)) == want_ctr[k], std::string("counter ") + kCtrName[k] + " = " +
                                                         std::to_string(c.get(Ctr(k))) +
                                                         ", expected " +
                                                         std::to_string(want_ctr[k]));
    tr.free_all(h.pool, base);
    h.shared.flows = nullptr;
    return res;
}

} // namespace

// Both paths, each against the model, then against each other: the vector path must make
// the same frames, byte for byte, the same counters and the same events as the scalar one.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    BurstInput in = split_burst(data, size);
    if (in.mode & 16) { // a 100-byte MTU: frames are cut into fragments of 80 bytes
        // The harness reads what the stage queued; a queue holds 2 x kBurst mbufs and a full
        // one is flushed to a device the harness does not have. Keep the frames whose
        // fragments (at most one per 80 bytes of frame) fit ztunnel's queue.
        size_t outputs = 0, keep = 0;
        for (const Record& r : in.frames) {
            outputs += std::max<size_t>(1, (r.len + 79) / 80);
            if (outputs > TxQueue{}.pkts.size()) break;
            keep++;
        }
        in.frames.resize(keep);
    }
    if (in.frames.empty()) return 0;
    const Outcome scalar = run_path(in, false);
    const Outcome vector = run_path(in, true);
    for (size_t i = 0; i < scalar.dev.size(); i++)
        FUZZ_CHECK(scalar.dev[i] == vector.dev[i] && scalar.out[i] == vector.out[i],
                   "frame " + std::to_string(i) + ": the vector path sent " +
                       hex(vector.out[i].data(), std::min<size_t>(vector.out[i].size(), 80)) +
                       " to " + std::to_string(vector.dev[i]) + ", the scalar one " +
                       hex(scalar.out[i].data(), std::min<size_t>(scalar.out[i].size(), 80)) +
                       " to " + std::to_string(scalar.dev[i]));
    FUZZ_CHECK(scalar.made == vector.made, "the paths made different frames");
    FUZZ_CHECK(scalar.ctr == vector.ctr, "the paths counted differently");
    FUZZ_CHECK(scalar.events == vector.events, "the paths posted different events");
    return 0;
}
