// DNS capture in the node's dataplane (inbound.dns_capture): a meshed pod's UDP/53 goes to
// ZT_IP:15053 and ztunnel's answer back to the pod from the address it asked; the
// incremental checksums against sums computed afresh; every outcome counted; nothing of it
// when the switch is off. Registered for both fast paths (tests/meson.build).
#include <gtest/gtest.h>

#include <random>

#include <rte_ip.h>

#include "control/snapshot_builder.hpp"
#include "dataplane/nat.hpp"
#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

constexpr uint32_t kPod = 0x0af40203, kLegacy = 0x0af40214, kZtIp = 0x0af4020a,
                   kVip = 0x0a60000a, // 10.96.0.10, the cluster's DNS service
    kOtherDns = 0x0a600035;           // 10.96.0.53
const rte_ether_addr kPodMac{{0x02, 0, 0, 0, 0x02, 0x03}};
const rte_ether_addr kZtMac{{0x02, 0, 0, 0, 0x02, 0x0a}};
const rte_ether_addr kLinkMac{{0x02, 0, 0, 0, 0x01, 0x0a}};

uint16_t be16_at(const std::vector<uint8_t>& b, size_t at) {
    return uint16_t(b[at] << 8 | b[at + 1]);
}
uint32_t be32_at(const std::vector<uint8_t>& b, size_t at) {
    return uint32_t(be16_at(b, at)) << 16 | be16_at(b, at + 2);
}

// The sum of the 16-bit words of b[from, to) (an odd end padded with 0), folded.
uint32_t words(const std::vector<uint8_t>& b, size_t from, size_t to, uint32_t sum = 0) {
    for (size_t i = from; i < to; i += 2) sum += uint32_t(b[i]) << 8 | (i + 1 < to ? b[i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

// The UDP checksum of the untagged IPv4/UDP frame b computed afresh (field taken as 0).
uint16_t udp_sum(std::vector<uint8_t> b) {
    const size_t ip = 14, l4 = ip + 20, end = ip + be16_at(b, ip + 2);
    b[l4 + 6] = b[l4 + 7] = 0;
    uint32_t sum = words(b, ip + 12, ip + 20) + 17 + uint32_t(end - l4);
    const uint16_t c = uint16_t(~words(b, l4, end, sum));
    return c == 0 ? 0xffff : c;
}
bool ip_header_ok(const std::vector<uint8_t>& b) {
    return words(b, 14, 34) == 0xffff;
}
// Sets b's IPv4 header checksum to the right one.
void fix_ip_sum(std::vector<uint8_t>& b) {
    b[14 + 10] = b[14 + 11] = 0;
    const uint32_t s = words(b, 14, 34);
    b[14 + 10] = uint8_t(~s >> 8);
    b[14 + 11] = uint8_t(~s);
}
// Sets b's UDP checksum to the right one.
std::vector<uint8_t> with_udp_sum(std::vector<uint8_t> b) {
    const uint16_t c = udp_sum(b);
    b[14 + 20 + 6] = uint8_t(c >> 8);
    b[14 + 20 + 7] = uint8_t(c);
    return b;
}

// b is an untagged IPv4/UDP frame to dst_mac, src:sport -> dst:dport, TTL ttl, both
// checksums right.
void expect_udp(const std::vector<uint8_t>& b, const rte_ether_addr& dst_mac, uint32_t src,
                uint32_t dst, uint16_t sport, uint16_t dport, uint8_t ttl) {
    ASSERT_GE(b.size(), 42u);
    EXPECT_EQ(0, std::memcmp(b.data(), dst_mac.addr_bytes, 6));
    EXPECT_EQ(b[14 + 8], ttl);
    EXPECT_EQ(be32_at(b, 26), src);
    EXPECT_EQ(be32_at(b, 30), dst);
    EXPECT_EQ(be16_at(b, 34), sport);
    EXPECT_EQ(be16_at(b, 36), dport);
    EXPECT_TRUE(ip_header_ok(b));
    EXPECT_EQ(be16_at(b, 40), udp_sum(b));
}

FrameSpec udp(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint16_t payload = 33) {
    FrameSpec f;
    f.proto = 17;
    f.src = src;
    f.dst = dst;
    f.sport = sport;
    f.dport = dport;
    f.payload = payload;
    return f;
}
// A pod's query to dst:53 from sport, with its UDP checksum.
std::vector<uint8_t> query(uint16_t sport, uint32_t dst = kVip, uint32_t src = kPod) {
    return with_udp_sum(make_frame(udp(src, dst, sport, 53)));
}
// ztunnel's answer from ZT_IP:15053 to the pod's sport, as its link delivers it.
std::vector<uint8_t> answer(uint16_t dport, uint16_t payload = 61) {
    auto b = with_udp_sum(make_frame(udp(kZtIp, kPod, 15053, dport, payload)));
    std::memcpy(b.data(), kLinkMac.addr_bytes, 6);
    std::memcpy(b.data() + 6, kZtMac.addr_bytes, 6);
    return b;
}

class Dns : public ::testing::Test {
  protected:
    Harness h;
    std::unique_ptr<FlowTable> flows;
    void SetUp() override { lab(true); }
    // The lab's node with inbound on (and dns_capture as given), kPod located on the pods
    // port, a flow table of `max` entries.
    void lab(bool capture, uint32_t max = 64, std::vector<uint8_t> protocols = {6}) {
        flows = std::make_unique<FlowTable>("tdns" + std::to_string(n_++), max, *h.rcu);
        h.shared.flows = flows.get();
        Config c = lab_config();
        c.protocols = protocols;
        c.inbound.enabled = true;
        c.inbound.inner_src_mac = {0x02, 0, 0, 0, 0x7e, 0x01};
        c.inbound.inner_dst_mac = {0x02, 0, 0, 0, 0x7e, 0x02};
        c.inbound.dns_capture = capture;
        Topology t = h.topo;
        t.devs[t.link].mac = kLinkMac;
        h.set_snapshot(*build_snapshot(c, t, kZtMac, 0));
        if (!h.pods->contains(Ip4::from_host(kPod))) {
            ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
            ASSERT_TRUE(h.pods->set_location(Ip4::from_host(kPod),
                                             PodLocation::of(Harness::kPods, kPodMac)));
        }
    }
    void from_ztunnel(const std::vector<uint8_t>& b) {
        rte_mbuf* m = h.frame(b);
        node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    }
    std::vector<std::vector<uint8_t>> all(uint16_t dev) {
        std::vector<std::vector<uint8_t>> r;
        for (rte_mbuf* m : h.take(dev)) {
            r.emplace_back(rte_pktmbuf_mtod(m, uint8_t*),
                           rte_pktmbuf_mtod(m, uint8_t*) + m->pkt_len);
            rte_pktmbuf_free(m);
        }
        return r;
    }
    std::vector<uint8_t> one(uint16_t dev) {
        auto r = all(dev);
        EXPECT_EQ(r.size(), 1u) << "frames sent to device " << dev;
        return r.empty() ? std::vector<uint8_t>{} : r[0];
    }
    bool nothing_else(std::initializer_list<uint16_t> devs) {
        bool none = true;
        for (uint16_t d : devs) none &= all(d).empty();
        return none;
    }
    static inline int n_ = 0;
};

TEST(DnsNat, IncrementalChecksumsEqualFreshSums) {
    eal_once();
    Harness h;
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; i++) {
        const uint32_t a = uint32_t(rng()), b = uint32_t(rng());
        const uint16_t pa = uint16_t(rng()), pb = uint16_t(rng());
        auto f = with_udp_sum(make_frame(udp(a, b, pa, pb, uint16_t(rng() % 64))));
        f[14 + 8] = uint8_t(rng()); // any TTL: another header sum
        fix_ip_sum(f);
        const bool dst = i & 1;
        const uint32_t to = uint32_t(rng());
        const uint16_t port = uint16_t(rng());
        rte_mbuf* m = h.frame(f);
        const Parsed p = parse_frame(m);
        rewrite_udp_end(m, p, l4_checksum_field(m, p), dst ? UdpEnd::Destination : UdpEnd::Source,
                        Ip4::from_host(to), Be16::from_host(port));
        const std::vector<uint8_t> g(rte_pktmbuf_mtod(m, uint8_t*),
                                     rte_pktmbuf_mtod(m, uint8_t*) + m->pkt_len);
        rte_pktmbuf_free(m);
        ASSERT_EQ(be32_at(g, 14 + (dst ? 16 : 12)), to) << i;
        ASSERT_EQ(be16_at(g, 34 + (dst ? 2 : 0)), port) << i;
        ASSERT_TRUE(ip_header_ok(g)) << i;
        ASSERT_EQ(be16_at(g, 34 + 6), udp_sum(g)) << i << ": as a fresh sum, 0 written 0xFFFF";
    }
    // A checksum that comes out as 0 is written 0xFFFF (0 is "none"): with the port chosen
    // so that the words sum to 0xFFFF (the checksum with port 0 is the port that does it).
    auto rewritten = [&](const std::vector<uint8_t>& in, uint16_t port) {
        rte_mbuf* m = h.frame(in);
        const Parsed p = parse_frame(m);
        rewrite_udp_end(m, p, l4_checksum_field(m, p), UdpEnd::Destination, Ip4::from_host(kZtIp),
                        Be16::from_host(port));
        std::vector<uint8_t> g(rte_pktmbuf_mtod(m, uint8_t*),
                               rte_pktmbuf_mtod(m, uint8_t*) + m->pkt_len);
        rte_pktmbuf_free(m);
        return g;
    };
    const auto q0 = with_udp_sum(make_frame(udp(kPod, kVip, 1000, 53, 20)));
    const uint16_t zero_port = be16_at(rewritten(q0, 0), 40);
    const auto z = rewritten(q0, zero_port);
    EXPECT_EQ(be16_at(z, 40), 0xffff) << "the sum is 0xFFFF: the checksum 0, written 0xFFFF";
    const uint32_t pseudo = words(z, 26, 34) + 17 + uint32_t(z.size() - 34);
    EXPECT_EQ(words(z, 34, z.size(), pseudo), 0xffffu) << "and it verifies";
    // No UDP checksum (0) stays none.
    auto f = make_frame(udp(kPod, kVip, 1000, 53));
    rte_mbuf* m = h.frame(f);
    const Parsed p = parse_frame(m);
    rewrite_udp_end(m, p, l4_checksum_field(m, p), UdpEnd::Destination, Ip4::from_host(kZtIp),
                    Be16::from_host(15053));
    EXPECT_EQ(rte_pktmbuf_mtod_offset(m, uint8_t*, 40)[0] |
                  rte_pktmbuf_mtod_offset(m, uint8_t*, 41)[0],
              0);
    rte_pktmbuf_free(m);
}

TEST_F(Dns, QueryGoesToZtunnel15053AndTheAnswerComesBackFromTheVip) {
    const auto q = query(41000);
    h.run_pods({h.frame(q)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::flow_insert), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), 0u);
    auto b = one(Harness::kZt);
    ASSERT_EQ(b.size(), q.size()) << "not encapsulated";
    // To ztunnel's MAC, one routed hop, the source kept, the destination ZT_IP:15053.
    expect_udp(b, kZtMac, kPod, kZtIp, 41000, 15053, 63);
    EXPECT_EQ(0, std::memcmp(b.data() + 6, kLinkMac.addr_bytes, 6)) << "from ours on its link";
    EXPECT_EQ(0, std::memcmp(b.data() + 42, q.data() + 42, q.size() - 42)) << "payload as sent";
    EXPECT_TRUE(nothing_else({Harness::kPodsTwin, Harness::kZtTwin}));

    from_ztunnel(answer(41000));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::dns_answer), 1u);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::flow_hit), 1u);
    // To the pod's MAC, one hop, from the address the pod asked.
    expect_udp(one(Harness::kPods), kPodMac, kVip, kPod, 53, 41000, 63);
    EXPECT_TRUE(nothing_else({Harness::kZt, Harness::kPodsTwin, Harness::kZtTwin}));
    // A second answer (the AAAA of an A + AAAA pair) is translated too.
    from_ztunnel(answer(41000, 80));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::dns_answer), 2u);
    EXPECT_EQ(be32_at(one(Harness::kPods), 26), kVip);
    EXPECT_EQ(flows->size(), 1u);
    EXPECT_EQ(flows->connections(), 0u) << "no connection: the pods stage skips its lookups";
}

TEST_F(Dns, NoChecksumStaysNoneAndPartialIsCompletedFirst) {
    auto q = make_frame(udp(kPod, kVip, 41001, 53)); // checksum 0
    h.run_pods({h.frame(q)});
    auto b = one(Harness::kZt);
    EXPECT_EQ(be16_at(b, 40), 0) << "no checksum: none after the rewrite";
    EXPECT_TRUE(ip_header_ok(b));
    // The pod's kernel left the checksum to offload: the pseudo-header sum in the field.
    q = make_frame(udp(kPod, kVip, 41002, 53));
    const uint32_t pseudo = words(q, 26, 34) + 17 + uint32_t(q.size() - 34);
    const uint16_t folded = uint16_t((pseudo & 0xffff) + (pseudo >> 16));
    q[40] = uint8_t(folded >> 8);
    q[41] = uint8_t(folded);
    h.run_pods({h.frame(q)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::csum_completed), 1u);
    b = one(Harness::kZt);
    EXPECT_EQ(be16_at(b, 40), udp_sum(b)) << "completed, then rewritten";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture), 2u);
}

TEST_F(Dns, WhatIsNotAMeshedPodsQueryTakesTheKernelPathAsToday) {
    auto frag = query(41003);
    frag[14 + 6] = 0x20; // MF: a first fragment (the kernel reassembles before its NAT)
    fix_ip_sum(frag);
    auto ttl1 = query(41004);
    ttl1[14 + 8] = 1;
    fix_ip_sum(ttl1);
    std::vector<std::vector<uint8_t>> in = {
        query(41000, kVip, kLegacy),                           // not meshed
        with_udp_sum(make_frame(udp(kPod, kVip, 5353, 5353))), // not port 53
        frag,
        ttl1, // the kernel answers: time exceeded
    };
    std::vector<rte_mbuf*> burst;
    for (auto& f : in) burst.push_back(h.frame(f));
    h.run_pods(burst);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), in.size());
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture), 0u);
    EXPECT_EQ(all(Harness::kPodsTwin), in) << "unchanged, in order";
    EXPECT_TRUE(flows->empty());
}

TEST_F(Dns, AnswerWithoutEntryGoesToTheKernelUnchanged) {
    const auto a = answer(42000);
    from_ztunnel(a);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::dns_no_entry), 1u);
    EXPECT_EQ(one(Harness::kZtTwin), a) << "not un-NATed: conntrack has no entry either";
    // ztunnel's other UDP (not from 15053) is its own: passed as before.
    const auto own = with_udp_sum(make_frame(udp(kZtIp, kPod, 15054, 42000)));
    from_ztunnel(own);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::pass), 1u);
    EXPECT_EQ(one(Harness::kZtTwin), own);
}

TEST_F(Dns, FullTableSendsTheQueryToTheKernelAsToday) {
    lab(true, 8);
    uint32_t inserted = 0;
    for (uint16_t i = 0; i < 8; i++) h.run_pods({h.frame(query(uint16_t(43000 + i)))});
    inserted = uint32_t(h.counter(Harness::kPods, Ctr::flow_insert));
    EXPECT_EQ(inserted, 8u);
    EXPECT_EQ(all(Harness::kZt).size(), 8u);
    const auto q = query(44000);
    h.run_pods({h.frame(q)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_flow_full), 1u);
    EXPECT_EQ(one(Harness::kPodsTwin), q) << "unchanged, to the kernel (its DNAT, if any)";
    EXPECT_TRUE(all(Harness::kZt).empty());
    h.run_pods({h.frame(query(43003))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::flow_hit), 1u) << "a known port still captured";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture), 9u);
    one(Harness::kZt);
}

TEST_F(Dns, EntriesExpireOnTheirOwnIdleTimeAndAnswersThenGoToTheKernel) {
    h.run_pods({h.frame(query(45000))});
    one(Harness::kZt);
    const uint32_t now = flows->tick(rte_rdtsc());
    EXPECT_EQ(flows->expire(now + 5, 1000000, 1000000, 10), 0u) << "idle 5 of 10 ticks";
    EXPECT_EQ(flows->expire(now + 10, 1000000, 1000000, 10), 1u) << "not the connections' 1000000";
    EXPECT_TRUE(flows->empty());
    from_ztunnel(answer(45000));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::dns_no_entry), 1u);
    one(Harness::kZtTwin);
}

TEST_F(Dns, ANewQueryToAnotherServerIsAnsweredFromThatServer) {
    h.run_pods({h.frame(query(46000, kVip)), h.frame(query(46000, kOtherDns))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::flow_insert), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::flow_hit), 1u);
    EXPECT_EQ(all(Harness::kZt).size(), 2u);
    from_ztunnel(answer(46000));
    EXPECT_EQ(be32_at(one(Harness::kPods), 26), kOtherDns) << "the last query's destination";
}

TEST_F(Dns, AnswerForAPodNotLocatedYetGoesToTheKernelTranslated) {
    constexpr uint32_t kNew = 0x0af40205;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kNew)));
    h.run_pods({h.frame(query(47000, kVip, kNew))}); // its location is control's to set
    one(Harness::kZt);
    auto a = with_udp_sum(make_frame(udp(kZtIp, kNew, 15053, 47000)));
    from_ztunnel(a);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::dns_answer), 1u);
    const auto b = one(Harness::kZtTwin);
    EXPECT_EQ(be32_at(b, 26), kVip);
    EXPECT_EQ(be16_at(b, 34), 53);
    EXPECT_EQ(b[14 + 8], 64) << "the kernel routes it";
    EXPECT_EQ(be16_at(b, 40), udp_sum(b));
}

TEST_F(Dns, AnEntryIsNoConnection) {
    h.run_pods({h.frame(query(48000))});
    one(Harness::kZt);
    // The pod's TCP from the same port to ztunnel's 15053 is a direct packet, not a return
    // on a proxied connection; its other TCP is still redirected (the vector path too).
    FrameSpec t;
    t.dst = kZtIp;
    t.sport = 48000;
    t.dport = 15053;
    FrameSpec r;
    r.sport = 48001;
    h.run_pods({h.frame(make_frame(t)), h.frame(make_frame(r))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::direct), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::proxy_return), 0u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::flow_hit), 0u);
    EXPECT_EQ(all(Harness::kZt).size(), 2u);
}

TEST_F(Dns, CapturedEvenWhenUdpIsRedirected) {
    lab(true, 64, {6, 17});
    h.run_pods(
        {h.frame(query(49000)), h.frame(with_udp_sum(make_frame(udp(kPod, kVip, 49001, 5353))))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u) << "other UDP: into istioout";
    auto out = all(Harness::kZt);
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(be16_at(out[0], 36), 15053);
}

TEST_F(Dns, OffQueriesAndAnswersPassAsToday) {
    lab(false);
    const auto q = query(50000);
    h.run_pods({h.frame(q)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), 1u);
    EXPECT_EQ(one(Harness::kPodsTwin), q);
    const auto a = answer(50000);
    from_ztunnel(a);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::pass), 1u);
    EXPECT_EQ(one(Harness::kZtTwin), a);
    EXPECT_TRUE(flows->empty());
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::dns_capture) +
                  h.counter(Harness::kZt, Ctr::dns_answer) +
                  h.counter(Harness::kZt, Ctr::dns_no_entry),
              0u);
}

} // namespace
