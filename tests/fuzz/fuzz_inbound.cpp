// fuzz_inbound: the node's inbound paths (the `inbound` section) over a burst of up to 32
// fuzzed frames (format: fuzz_support.hpp), with a flow table of 64 connections whose
// contents a model of its own follows (the key set, and per bucket how many slots are
// taken: the table's only reason to be full before its size limit).
//
// In order, each stage gets the burst (mode bits say which):
//   bit 0: the ztunnel port (node_from_ztunnel): TCP not from the ztunnel IP is learned and
//          proxied (to the located pod, TTL - 1, or to the kernel), or dropped when full;
//   bit 1: a pods port (node_from_pods) with every TCP frame mirrored (addresses and ports
//          swapped): a remembered connection's reply returns to ztunnel unencapsulated;
//   bit 2: the pods port's twin (node_from_twin): the skips (ztunnel IP, UDP, node address,
//          a proxied connection), inbound Geneve VNI 1000, pass;
//   bit 3: the ztunnel's MAC unknown;
//   bit 4: the uplink's aggregation device with `attach: xdp` (node_from_xdp_uplink): what
//          its program handed over goes into istioin with table 100's hop (TTL - 1), TTL 1
//          and non-IPv4 (never handed over) dropped.
// Every predicted fate is checked with its device and bytes; frames on paths that are not
// inbound's (decapsulation, outbound classification: their own targets) are checked only
// never to get an inbound verdict. No mbuf leaks or is sent twice, the stages' counters
// account for every frame, flow_insert / flow_hit / drop_flow_full balance with the model.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>

#include <rte_ip.h>
#include <rte_mempool.h>

#include "control/ether.hpp"
#include "control/snapshot_builder.hpp"
#include "dataplane/flow_table.hpp"
#include "dataplane/geneve.hpp"
#include "dataplane/parse.hpp"
#include "pipelines/node.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::fuzz;
using ztg::test::Harness;

namespace {

constexpr uint32_t kCapacity = 64;
const Ip4 kPodIps[] = {ip4(10, 244, 2, 3), ip4(10, 244, 2, 2), ip4(10, 244, 2, 7)};
const Ip4 kLocated = ip4(10, 244, 2, 3);
const rte_ether_addr kPodMac{{0x02, 0, 0, 0, 0x02, 0x03}};

Harness* g_h = nullptr;
Snapshot g_base;

bool meshed(Ip4 ip) {
    return std::find(std::begin(kPodIps), std::end(kPodIps), ip) != std::end(kPodIps);
}

struct Model {
    std::map<std::array<uint32_t, 3>, FlowKind> kinds; // addrs lo, hi, ports
    std::map<uint32_t, uint32_t> used;                 // bucket -> slots taken
    uint64_t inserts = 0, hits = 0, full = 0;
    static std::array<uint32_t, 3> id(const FlowKey& k) {
        return {k.client.raw, k.pod.raw, k.ports()};
    }
    FlowKind find(const FlowKey& k) const {
        auto it = kinds.find(id(k));
        return it == kinds.end() ? FlowKind::None : it->second;
    }
    // As FlowTable::learn: 'hit', inserted, or full (size limit or a full bucket).
    bool learn(const FlowTable& t, const FlowKey& k, FlowKind kind) {
        if (find(k) != FlowKind::None) return hits++, true;
        uint32_t& u = used[t.bucket_index(k)];
        if (kinds.size() >= kCapacity || u >= FlowTable::kWays) return full++, false;
        u++;
        kinds[id(k)] = kind;
        inserts++;
        return true;
    }
};

bool plain_tcp(const Parsed& p) {
    return p.ipv4 && p.proto == IPPROTO_TCP && !p.fragment;
}

// The frame with IPv4 source and destination, and the TCP ports, swapped (checksums are
// left as they are: nothing on these paths checks them).
std::vector<uint8_t> mirrored(std::vector<uint8_t> b, const Parsed& p) {
    if (!plain_tcp(p)) return b;
    const size_t ip = p.l3_off, ihl = (b[ip] & 0x0f) * 4u;
    for (size_t i = 0; i < 4; i++) std::swap(b[ip + 12 + i], b[ip + 16 + i]);
    if (b.size() >= ip + ihl + 4) {
        std::swap(b[ip + ihl], b[ip + ihl + 2]);
        std::swap(b[ip + ihl + 1], b[ip + ihl + 3]);
    }
    return b;
}

constexpr int kNone = -1;
struct Expect {
    Ctr ctr = Ctr::pass;
    int dev = kNone;
    enum { Same, Routed, Encap, EncapRouted, Any } bytes = Same;
    bool predicted = true; // false: not an inbound path, only "no inbound verdict"
};

bool inbound_verdict(Ctr c) {
    return c == Ctr::inbound || c == Ctr::skip_ztunnel || c == Ctr::skip_udp ||
           c == Ctr::skip_host || c == Ctr::skip_proxied || c == Ctr::proxied ||
           c == Ctr::proxied_kernel || c == Ctr::proxy_return || c == Ctr::drop_flow_full;
}

FlowKey key(const Parsed& p) {
    return {p.src, p.dst, p.sport, p.dport};
}

uint8_t ttl_of(const std::vector<uint8_t>& b, const Parsed& p) {
    return b[p.l3_off + 8];
}

Expect predict_ztunnel(const Parsed& p, const std::vector<uint8_t>& b, const Snapshot& s, Model& m,
                       const FlowTable& t) {
    if (!plain_tcp(p) || p.src == s.remote_ip) return {Ctr::pass, kNone, Expect::Any, false};
    if (!m.learn(t, key(p), FlowKind::Proxied)) return {Ctr::drop_flow_full};
    if (p.dst == kLocated && ttl_of(b, p) > 1)
        return {Ctr::proxied, Harness::kPods, Expect::Routed};
    return {Ctr::proxied_kernel, Harness::kZtTwin, Expect::Same};
}

Expect predict_pods(const Parsed& p, const std::vector<uint8_t>& b, const Snapshot& s, Model& m) {
    const Expect other{Ctr::pass, kNone, Expect::Any, false};
    if (!plain_tcp(p)) return other;
    const FlowKind k = m.find({p.dst, p.src, p.dport, p.sport});
    if (k == FlowKind::None) return other;
    m.hits++;
    if (k == FlowKind::Host) return {Ctr::skip_host, Harness::kPodsTwin, Expect::Same};
    if (!s.nexthop_known) return {Ctr::drop_no_nexthop};
    if (ttl_of(b, p) <= 1) return {Ctr::pass, Harness::kPodsTwin, Expect::Same};
    return {Ctr::proxy_return, Harness::kZt, Expect::Routed};
}

Expect predict_twin(const Parsed& p, const Snapshot& s, Model& m, const FlowTable& t) {
    const Expect to_pod{Ctr::pass, Harness::kPods, Expect::Same};
    if (!p.ipv4 || !meshed(p.dst)) return to_pod;
    if (p.src == s.remote_ip) return {Ctr::skip_ztunnel, Harness::kPods, Expect::Same};
    if (p.proto == IPPROTO_UDP) return {Ctr::skip_udp, Harness::kPods, Expect::Same};
    if (p.src == s.local_ip) {
        if (plain_tcp(p) && !m.learn(t, key(p), FlowKind::Host)) return {Ctr::drop_flow_full};
        return {Ctr::skip_host, Harness::kPods, Expect::Same};
    }
    if (plain_tcp(p) && m.find(key(p)) != FlowKind::None)
        return m.hits++, Expect{Ctr::skip_proxied, Harness::kPods, Expect::Same};
    if (!s.redirects_inbound(p.proto)) return to_pod;
    if (!s.nexthop_known) return {Ctr::drop_no_nexthop};
    if (p.ip_len > s.max_inner_len) return {Ctr::fragmented, kNone, Expect::Any, false};
    return {Ctr::inbound, Harness::kZt, Expect::Encap};
}

// The uplink's stage with `attach: xdp`: the program's choice is not made again.
Expect predict_xdp_uplink(const Parsed& p, const std::vector<uint8_t>& b, const Snapshot& s) {
    if (!p.ipv4 || ttl_of(b, p) <= 1) return {Ctr::drop_no_twin};
    if (!s.nexthop_known) return {Ctr::drop_no_nexthop};
    if (p.ip_len > s.max_inner_len) return {Ctr::fragmented, kNone, Expect::Any, false};
    return {Ctr::inbound, Harness::kZt, Expect::EncapRouted};
}

// Whether an IPv4 header's checksum (RFC 1071) holds, by DPDK's sum (not the stage's
// cksum.hpp: the oracle stays independent of the code it checks).
bool header_sums(const uint8_t* ip) {
    return rte_raw_cksum(ip, size_t(ip[0] & 0xf) * 4) == 0xffff;
}

void check_bytes(const Expect& e, const std::vector<uint8_t>& meant, const Parsed& p,
                 const std::vector<uint8_t>& o, const Snapshot& s, const std::string& what) {
    const std::vector<uint8_t> ip(meant.begin() + p.l3_off, meant.begin() + p.l3_off + p.ip_len);
    switch (e.bytes) {
    case Expect::Same:
        FUZZ_CHECK(o == meant, what + ": changed");
        break;
    case Expect::Routed: {
        FUZZ_CHECK(o.size() == 14u + p.ip_len, what + ": routed frame of the wrong length");
        const rte_ether_addr& dst = e.dev == Harness::kPods ? kPodMac : s.nexthop_mac;
        FUZZ_CHECK(std::memcmp(o.data(), dst.addr_bytes, 6) == 0, what + ": destination MAC");
        FUZZ_CHECK(be16(o, 12) == 0x0800, what + ": ethertype");
        FUZZ_CHECK(o[14 + 8] == ip[8] - 1, what + ": TTL not decremented");
        for (size_t i = 0; i < ip.size(); i++)
            if (i != 8 && i != 10 && i != 11)
                FUZZ_CHECK(o[14 + i] == ip[i],
                           what + ": IPv4 packet changed at " + std::to_string(i));
        break;
    }
    case Expect::Encap: {
        const TunnelEntry& tn = s.inbound_tunnel();
        FUZZ_CHECK(o.size() == EncapTemplate::kSize + ip.size(), what + ": encapsulated length");
        FUZZ_CHECK((uint32_t(o[46]) << 16 | o[47] << 8 | o[48]) == tn.vni, what + ": VNI");
        FUZZ_CHECK(std::memcmp(o.data() + 50, tn.tmpl.bytes.data() + 50, 14) == 0,
                   what + ": inner Ethernet header (istioin -> pistioin)");
        FUZZ_CHECK(std::memcmp(o.data(), tn.tmpl.bytes.data(), 14) == 0, what + ": outer MACs");
        FUZZ_CHECK(std::equal(ip.begin(), ip.end(), o.begin() + EncapTemplate::kSize),
                   what + ": inner packet changed");
        break;
    }
    case Expect::EncapRouted: {
        const TunnelEntry& tn = s.inbound_tunnel();
        FUZZ_CHECK(o.size() == EncapTemplate::kSize + ip.size(), what + ": encapsulated length");
        FUZZ_CHECK((uint32_t(o[46]) << 16 | o[47] << 8 | o[48]) == tn.vni, what + ": VNI");
        FUZZ_CHECK(std::memcmp(o.data(), tn.tmpl.bytes.data(), 14) == 0, what + ": outer MACs");
        FUZZ_CHECK(std::memcmp(o.data() + 50, tn.tmpl.bytes.data() + 50, 14) == 0,
                   what + ": inner Ethernet header (istioin -> pistioin)");
        const uint8_t* in = o.data() + EncapTemplate::kSize;
        FUZZ_CHECK(in[8] == ip[8] - 1, what + ": table 100's hop: TTL not decremented");
        for (size_t i = 0; i < ip.size(); i++)
            if (i != 8 && i != 10 && i != 11)
                FUZZ_CHECK(in[i] == ip[i], what + ": inner packet changed at " + std::to_string(i));
        if (header_sums(ip.data()))
            FUZZ_CHECK(header_sums(in), what + ": inner IPv4 checksum not updated with the TTL");
        break;
    }
    case Expect::Any:
        break;
    }
}

void setup() {
    test::eal_once();
    g_h = new Harness(1024, true);
    Config c = test::lab_config();
    c.inbound.enabled = true;
    c.inbound.inner_src_mac = {0x02, 0, 0, 0, 0x7e, 0x01};
    c.inbound.inner_dst_mac = {0x02, 0, 0, 0, 0x7e, 0x02};
    Topology t = g_h->topo;
    t.devs[t.link].mac = {{0x02, 0, 0, 0, 0x01, 0x0a}};
    g_base = *build_snapshot(c, t, to_ether(*c.tunnel.next_hop_mac), 0);
    for (Ip4 ip : kPodIps)
        if (!g_h->pods->add(ip)) std::abort();
    g_h->pods->set_location(kLocated, PodLocation::of(Harness::kPods, kPodMac));
}

// Runs stage over the frames (bytes[i], each made an mbuf), checks every fate against
// want (predicted by `predict` in order) and the counters of device dev.
template <class Predict>
void run_stage(Harness& h, uint16_t dev, Stage stage, const std::vector<Record>& recs,
               const std::vector<std::vector<uint8_t>>& frames, const Snapshot& s,
               Predict&& predict) {
    const unsigned base = rte_mempool_in_use_count(h.pool);
    Tracker tr;
    std::vector<rte_mbuf*> pkts;
    std::vector<Parsed> parsed;
    std::vector<Expect> want;
    std::vector<std::vector<uint8_t>> meant;
    for (size_t i = 0; i < frames.size(); i++) {
        rte_mbuf* m = make_mbuf(h.pool, frames[i].data(), frames[i].size(),
                                recs[i].shape & 0x80 ? std::max(1, recs[i].shape & 0x7f) : 0);
        check_mbuf(m, "input");
        parsed.push_back(parse_frame(m));
        meant.push_back(frames[i]);
        // The pods port and the ztunnel port's plain TCP complete a partial checksum first;
        // the twin stage only for what it encapsulates.
        want.push_back(predict(parsed.back(), frames[i]));
        if (dev != Harness::kPodsTwin || want.back().ctr == Ctr::inbound)
            complete_partial_model(meant.back(), parsed.back());
        tr.add(m, frames[i]);
        pkts.push_back(m);
    }
    reset_counters(h.counters);
    stage(h.ctx, dev, pkts.data(), uint16_t(pkts.size()));
    h.events.consume_all([](const Event&) {});
    tr.collect(h.ctx, true);
    const DeviceCounters& c = h.counters[dev];
    FUZZ_CHECK(verdict_sum(c) == pkts.size(),
               "counters account for " + std::to_string(verdict_sum(c)) + " of " +
                   std::to_string(pkts.size()) + ": " + counters_str(c));
    uint64_t want_ctr[kNumCtr] = {};
    uint64_t inbound_unpredicted = 0;
    for (size_t i = 0; i < pkts.size(); i++) {
        const Expect& e = want[i];
        const std::string what = "device " + std::to_string(dev) + " frame " + std::to_string(i) +
                                 " " +
                                 hex(frames[i].data(), std::min<size_t>(frames[i].size(), 64));
        if (!e.predicted) {
            if (e.ctr == Ctr::fragmented) inbound_unpredicted++; // too big: fragmented or dropped
            continue;
        }
        want_ctr[size_t(e.ctr)]++;
        FUZZ_CHECK(tr.in[i].out_dev == e.dev,
                   what + ": sent to device " + std::to_string(tr.in[i].out_dev) + ", expected " +
                       std::to_string(e.dev) + " (" + kCtrName[size_t(e.ctr)] + ")");
        if (e.dev != kNone) check_bytes(e, meant[i], parsed[i], bytes_of(pkts[i]), s, what);
    }
    for (size_t k = 0; k < kNumCtr; k++) {
        if (!inbound_verdict(Ctr(k)) && Ctr(k) != Ctr::inbound) continue;
        FUZZ_CHECK(c.get(Ctr(k)) == want_ctr[k], std::string("device ") + std::to_string(dev) +
                                                     ": counter " + kCtrName[k] + " = " +
                                                     std::to_string(c.get(Ctr(k))) + ", expected " +
                                                     std::to_string(want_ctr[k]));
    }
    (void)inbound_unpredicted;
    tr.free_all(h.pool, base);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (g_h == nullptr) setup();
    Harness& h = *g_h;
    const BurstInput in = split_burst(data, size);
    Snapshot s = g_base;
    if (in.mode & 8) s.nexthop_known = false;
    h.set_snapshot(s);
    FlowTable flows("fz_flows", kCapacity, *h.rcu);
    h.shared.flows = &flows;
    Model m;
    std::vector<std::vector<uint8_t>> frames;
    for (const Record& r : in.frames) frames.emplace_back(r.data, r.data + r.len);
    const uint8_t stages = (in.mode & 7) == 0 ? 7 : in.mode & 7;
    uint64_t inserts = 0, hits = 0, full = 0;
    auto tally = [&](uint16_t dev) {
        inserts += h.counters[dev].get(Ctr::flow_insert);
        hits += h.counters[dev].get(Ctr::flow_hit);
        full += h.counters[dev].get(Ctr::drop_flow_full);
    };
    if (stages & 1) {
        run_stage(h, Harness::kZt, node_from_ztunnel, in.frames, frames, s,
                  [&](const Parsed& p, const std::vector<uint8_t>& b) {
                      return predict_ztunnel(p, b, s, m, flows);
                  });
        tally(Harness::kZt);
    }
    if (stages & 2) {
        std::vector<std::vector<uint8_t>> mirror;
        for (const auto& f : frames)
            mirror.push_back(
                mirrored(f, parse_ether(f.data(), uint32_t(f.size()), uint32_t(f.size()))));
        run_stage(h, Harness::kPods, node_from_pods, in.frames, mirror, s,
                  [&](const Parsed& p, const std::vector<uint8_t>& b) {
                      return predict_pods(p, b, s, m);
                  });
        tally(Harness::kPods);
    }
    if (stages & 4) {
        run_stage(h, Harness::kPodsTwin, node_from_twin, in.frames, frames, s,
                  [&](const Parsed& p, const std::vector<uint8_t>&) {
                      return predict_twin(p, s, m, flows);
                  });
        tally(Harness::kPodsTwin);
    }
    if (in.mode & 16) {
        // On the twin's index: the stage's verdicts do not depend on its device's kind, and
        // the twin's checksum rule (completed only for what is encapsulated) is the uplink's.
        run_stage(h, Harness::kPodsTwin, node_from_xdp_uplink, in.frames, frames, s,
                  [&](const Parsed& p, const std::vector<uint8_t>& b) {
                      return predict_xdp_uplink(p, b, s);
                  });
        tally(Harness::kPodsTwin);
    }
    FUZZ_CHECK(inserts == m.inserts && hits == m.hits && full == m.full,
               "flow counters: insert " + std::to_string(inserts) + "/" +
                   std::to_string(m.inserts) + ", hit " + std::to_string(hits) + "/" +
                   std::to_string(m.hits) + ", full " + std::to_string(full) + "/" +
                   std::to_string(m.full));
    FUZZ_CHECK(flows.size() == m.kinds.size(), "flow table size " + std::to_string(flows.size()) +
                                                   ", model " + std::to_string(m.kinds.size()));
    // Everything expires: the table is empty again, nothing leaks.
    flows.expire(flows.tick(rte_rdtsc()) + 1000000, 1, 1);
    FUZZ_CHECK(flows.empty(), "flows left after expiry");
    h.shared.flows = nullptr;
    return 0;
}
