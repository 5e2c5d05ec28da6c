// The node stage, table-driven: which frames are redirected, sent direct, passed to the
// kernel twin or dropped, and what each counter says.
#include <gtest/gtest.h>

#include <rte_ip.h>
#include <rte_tcp.h>

#include <algorithm>

#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

enum class Want { Redirect, Direct, Pass, DropNoTwin, DropTooBig, DropNoNexthop };

struct Case {
    const char* name;
    FrameSpec frame;
    Want want;
};

FrameSpec spec(uint32_t src, uint32_t dst, uint8_t proto, int vlan = -1, uint8_t ttl = 64) {
    FrameSpec f;
    f.src = src;
    f.dst = dst;
    f.proto = proto;
    f.vlan = vlan;
    f.ttl = ttl;
    return f;
}

constexpr uint32_t kPod = 0x0af40203, kOther = 0x0af40214, kVip = 0x0a60000a, kZt = 0x0af4020a;

const Case kCases[] = {
    {"pod TCP to VIP", spec(kPod, kVip, 6), Want::Redirect},
    {"pod TCP to VIP, VLAN tagged", spec(kPod, kVip, 6, 5), Want::Redirect},
    {"pod UDP (DNS) to VIP", spec(kPod, kVip, 17), Want::Pass},
    {"non-meshed TCP to VIP", spec(kOther, kVip, 6), Want::Pass},
    {"pod TCP to the ztunnel IP", spec(kPod, kZt, 6), Want::Direct},
    {"pod TCP to the ztunnel IP, VLAN tagged", spec(kPod, kZt, 6, 9), Want::Direct},
    {"pod TCP to the ztunnel IP, TTL 1", spec(kPod, kZt, 6, -1, 1), Want::Pass},
    {"pod UDP to the ztunnel IP", spec(kPod, kZt, 17), Want::Pass},
    {"pod ICMP", spec(kPod, kVip, 1), Want::Pass},
};

class Classify : public ::testing::TestWithParam<Case> {
  protected:
    Harness h;
    void SetUp() override { ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod))); }
};

TEST_P(Classify, Verdict) {
    const Case& c = GetParam();
    h.run_pods({h.frame(make_frame(c.frame))});
    auto zt = h.take(Harness::kZt);
    auto twin = h.take(Harness::kPodsTwin);
    switch (c.want) {
    case Want::Redirect: {
        ASSERT_EQ(zt.size(), 1u);
        EXPECT_EQ(twin.size(), 0u);
        EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u);
        const auto* udp = rte_pktmbuf_mtod_offset(zt[0], rte_udp_hdr*, 34);
        EXPECT_EQ(rte_be_to_cpu_16(udp->dst_port), 6081);
        break;
    }
    case Want::Direct: {
        ASSERT_EQ(zt.size(), 1u);
        EXPECT_EQ(h.counter(Harness::kPods, Ctr::direct), 1u);
        auto* eth = rte_pktmbuf_mtod(zt[0], rte_ether_hdr*);
        EXPECT_TRUE(rte_is_same_ether_addr(&eth->dst_addr, &h.snap.nexthop_mac));
        EXPECT_TRUE(rte_is_same_ether_addr(&eth->src_addr, &h.snap.link_mac));
        EXPECT_EQ(eth->ether_type, rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
            << "VLAN tag must be gone";
        auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
        EXPECT_EQ(ip->time_to_live, c.frame.ttl - 1);
        EXPECT_EQ(rte_ipv4_cksum(ip), 0) << "checksum not updated with the TTL";
        break;
    }
    case Want::Pass:
        EXPECT_EQ(zt.size(), 0u);
        ASSERT_EQ(twin.size(), 1u);
        EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), 1u);
        {
            const auto want = make_frame(c.frame);
            const auto* p = rte_pktmbuf_mtod(twin[0], const uint8_t*);
            EXPECT_EQ(std::vector<uint8_t>(p, p + twin[0]->data_len), want)
                << "passed frames are unchanged";
        }
        break;
    default:
        FAIL();
    }
    for (auto* m : zt) rte_pktmbuf_free(m);
    for (auto* m : twin) rte_pktmbuf_free(m);
}

INSTANTIATE_TEST_SUITE_P(Node, Classify, ::testing::ValuesIn(kCases), [](const auto& tpi) {
    std::string n = tpi.param.name;
    for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return n;
});

TEST(ClassifyDrops, NoTwinIsCountedAndFreed) {
    Harness h(1024, /*pods_twin=*/false);
    const unsigned before = rte_mempool_in_use_count(h.pool);
    h.run_pods({h.frame(make_frame(spec(kOther, kVip, 6)))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_no_twin), 1u);
    EXPECT_EQ(h.take(Harness::kPodsTwin).size(), 0u);
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before) << "dropped mbuf leaked";
}

TEST(ClassifyDrops, TooBigForTheTunnelMtu) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    FrameSpec f = spec(kPod, kVip, 6);
    f.payload = 1500 - 50 - 40 + 1; // inner 1451 bytes: outer would be 1501
    FrameSpec fits = f;
    fits.payload--;
    h.run_pods({h.frame(make_frame(f)), h.frame(make_frame(fits))});
    auto zt = h.take(Harness::kZt);
    ASSERT_EQ(zt.size(), 1u);
    EXPECT_EQ(zt[0]->pkt_len, 14u + 1500u) << "the largest that fits is exactly the MTU";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_too_big), 1u);
    rte_pktmbuf_free(zt[0]);
}

TEST(ClassifyDrops, UnresolvedNextHop) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    Snapshot s = lab_snapshot();
    s.nexthop_known = false;
    h.set_snapshot(s);
    h.run_pods(
        {h.frame(make_frame(spec(kPod, kVip, 6))), h.frame(make_frame(spec(kOther, kVip, 6)))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_no_nexthop), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), 1u) << "non-meshed traffic still passes";
    for (auto* m : h.take(Harness::kPodsTwin)) rte_pktmbuf_free(m);
}

TEST(ClassifyBurst, MixedBurstKeepsOrderPerOutput) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    std::vector<rte_mbuf*> in;
    for (int i = 0; i < 70; i++) { // more than two bursts
        FrameSpec f = spec(i % 3 == 0 ? kOther : kPod, kVip, 6);
        f.sport = uint16_t(1000 + i);
        in.push_back(h.frame(make_frame(f)));
    }
    h.run_pods(in);
    auto zt = h.take(Harness::kZt);
    auto twin = h.take(Harness::kPodsTwin);
    EXPECT_EQ(zt.size() + twin.size(), 70u);
    EXPECT_EQ(twin.size(), 24u);
    uint16_t last = 0;
    for (auto* m : zt) {
        const auto* tcp = rte_pktmbuf_mtod_offset(m, rte_tcp_hdr*, 64 + 20);
        EXPECT_GT(rte_be_to_cpu_16(tcp->src_port), last);
        last = rte_be_to_cpu_16(tcp->src_port);
        rte_pktmbuf_free(m);
    }
    for (auto* m : twin) rte_pktmbuf_free(m);
}

TEST(PodTableLive, RemovedPodStopsBeingRedirected) {
    Harness h;
    const Ip4 pod = Ip4::from_host(kPod);
    ASSERT_TRUE(h.pods->add(pod));
    h.run_pods({h.frame(make_frame(spec(kPod, kVip, 6)))});
    ASSERT_TRUE(h.pods->del(pod));
    h.run_pods({h.frame(make_frame(spec(kPod, kVip, 6)))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::pass), 1u);
    EXPECT_EQ(h.pods->size(), 0u);
}

} // namespace

namespace {

// RFC 1191: a too-big DF packet gets ICMP type 3 code 4 with the next-hop MTU, from the
// node, back out of the pod's port, quoting the packet; at most 100 a second per worker.
TEST(FragNeeded, IcmpToThePodWithTheTunnelMtu) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    FrameSpec f = spec(kPod, kVip, 6);
    f.payload = 1500 - 50 - 40 + 1; // DF is set by default
    const auto frame = make_frame(f);
    h.run_pods({h.frame(frame)});
    EXPECT_EQ(h.take(Harness::kZt).size(), 0u);
    auto out = h.take(Harness::kPods);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::icmp_frag_needed), 1u);
    const auto* b = rte_pktmbuf_mtod(out[0], const uint8_t*);
    EXPECT_EQ(std::vector<uint8_t>(b, b + 6),
              std::vector<uint8_t>(frame.begin() + 6, frame.begin() + 12))
        << "to the pod's MAC";
    const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(b + 14);
    EXPECT_EQ(rte_ipv4_cksum(ip), 0);
    EXPECT_EQ(ip->next_proto_id, IPPROTO_ICMP);
    EXPECT_EQ(ip->src_addr, ip4(10, 244, 2, 1).raw);
    EXPECT_EQ(ip->dst_addr, Ip4::from_host(kPod).raw);
    const uint8_t* icmp = b + 34;
    EXPECT_EQ(icmp[0], 3);
    EXPECT_EQ(icmp[1], 4);
    EXPECT_EQ(icmp[6] << 8 | icmp[7], 1450) << "next-hop MTU = 1500 - 50";
    EXPECT_EQ(rte_raw_cksum(icmp, out[0]->data_len - 34), 0xffff) << "ICMP checksum";
    EXPECT_EQ(std::vector<uint8_t>(icmp + 8, icmp + 8 + 28),
              std::vector<uint8_t>(frame.begin() + 14, frame.begin() + 42))
        << "quotes the offending header";
    rte_pktmbuf_free(out[0]);
}

TEST(FragNeeded, RateLimitedAndNotForFragmentablePackets) {
    Harness h;
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    FrameSpec f = spec(kPod, kVip, 6);
    f.payload = 1500;
    std::vector<rte_mbuf*> in;
    for (int i = 0; i < 150; i++) in.push_back(h.frame(make_frame(f)));
    f.frag = 0; // no DF: no ICMP (the packet is fragmented)
    in.push_back(h.frame(make_frame(f)));
    const unsigned before = rte_mempool_in_use_count(h.pool) - unsigned(in.size());
    for (size_t i = 0; i < in.size(); i += 32) {
        std::vector<rte_mbuf*> burst(in.begin() + long(i),
                                     in.begin() + long(std::min(in.size(), i + 32)));
        h.run_pods(burst);
        for (auto* m : h.take(Harness::kPods)) rte_pktmbuf_free(m);
        for (auto* m : h.take(Harness::kZt)) rte_pktmbuf_free(m);
    }
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::drop_too_big), 150u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::fragmented), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::icmp_frag_needed), 100u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::icmp_rate_limited), 50u);
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before) << "leak";
}

} // namespace
