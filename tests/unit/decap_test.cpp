// The return path: Geneve from ztunnel validated per RFC 8926, ECN per RFC 6040, and the
// inner frame delivered to the right pod, or counted under the right reason.
#include <gtest/gtest.h>

#include <rte_ip.h>

#include "dataplane/decap.hpp"
#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

constexpr uint32_t kPod = 0x0af40203; // 10.244.2.3
const rte_ether_addr kPodMac = {{0x02, 0, 0, 0, 0x02, 0x03}};

// A reply from the VIP to the pod, as pistioout would send it (inner Ethernet to istioout).
std::vector<uint8_t> reply(uint8_t tos = 0, uint32_t dst = kPod) {
    FrameSpec f;
    f.src = 0x0a60000a;
    f.dst = dst;
    f.sport = 9080;
    f.dport = 40000;
    f.tos = tos;
    f.payload = 10;
    return make_frame(f);
}

struct Decap : ::testing::Test {
    Harness h;
    void SetUp() override {
        ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
        ASSERT_TRUE(
            h.pods->set_location(Ip4::from_host(kPod), PodLocation::of(Harness::kPods, kPodMac)));
        h.topo.devs[Harness::kPods].mac = {{0x02, 0, 0, 0, 0x01, 0x03}};
        h.snap.decap = {ip4(10, 244, 2, 1), ip4(10, 244, 2, 10), 6081};
        h.snap.tunnels[0].vni = 1001;
        h.snap.tunnels[0].inner_ip = ip4(192, 168, 127, 1);
        h.snap.tunnels[0].inner_src = {{0x02, 0, 0, 0, 0x7f, 0x01}};
    }
    void run(const std::vector<uint8_t>& frame) {
        rte_mbuf* m = h.frame(frame);
        node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    }
    uint64_t c(Ctr x) { return h.counter(Harness::kZt, x); }
};

TEST_F(Decap, ValidFrameReachesThePodWithItsMac) {
    const auto inner = reply();
    run(geneve(Outer{}, inner));
    auto out = h.take(Harness::kPods);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(c(Ctr::decap), 1u);
    const auto* p = rte_pktmbuf_mtod(out[0], const uint8_t*);
    std::vector<uint8_t> got(p, p + out[0]->data_len);
    ASSERT_EQ(got.size(), inner.size());
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + 6),
              std::vector<uint8_t>(kPodMac.addr_bytes, kPodMac.addr_bytes + 6));
    EXPECT_EQ(got[6 + 5], 0x03) << "source: the pods port's twin MAC";
    // A routed hop, as the kernel forwards what istioout decapsulates: TTL - 1, checksum
    // updated, everything else as ztunnel sent it.
    auto want = inner;
    want[14 + 8]--;
    auto* wip = reinterpret_cast<rte_ipv4_hdr*>(want.data() + 14);
    wip->hdr_checksum = 0;
    wip->hdr_checksum = rte_ipv4_cksum(wip);
    EXPECT_EQ(std::vector<uint8_t>(got.begin() + 12, got.end()),
              std::vector<uint8_t>(want.begin() + 12, want.end()));
    rte_pktmbuf_free(out[0]);
}

TEST_F(Decap, OptionsOfEveryLegalLengthAreSkipped) {
    for (uint8_t words = 0; words < 64; words++) {
        Outer o;
        o.opt_words = words;
        run(geneve(o, reply()));
        auto out = h.take(Harness::kPods);
        ASSERT_EQ(out.size(), 1u) << int(words) << " option words";
        EXPECT_EQ(out[0]->pkt_len, reply().size());
        rte_pktmbuf_free(out[0]);
    }
    EXPECT_EQ(c(Ctr::decap), 64u);
}

struct BadCase {
    const char* name;
    Outer outer;
    Ctr want;
};

class DecapBad : public Decap, public ::testing::WithParamInterface<BadCase> {};

TEST_P(DecapBad, CountedNeverDelivered) {
    const auto& bc = GetParam();
    const unsigned before = rte_mempool_in_use_count(h.pool);
    run(geneve(bc.outer, reply()));
    EXPECT_EQ(h.take(Harness::kPods).size(), 0u);
    EXPECT_EQ(c(bc.want), 1u) << kCtrName[size_t(bc.want)];
    EXPECT_EQ(c(Ctr::decap), 0u);
    EXPECT_EQ(rte_mempool_in_use_count(h.pool), before) << "dropped frame leaked";
}

Outer with(void (*f)(Outer&)) {
    Outer o;
    f(o);
    return o;
}

const BadCase kBad[] = {
    {"version1", with([](Outer& o) { o.version = 1; }), Ctr::decap_bad_version},
    {"oam", with([](Outer& o) { o.flags = 0x80; }), Ctr::decap_oam},
    {"critical_with_options", with([](Outer& o) {
         o.flags = 0x40;
         o.opt_words = 2;
     }),
     Ctr::decap_critical},
    {"wrong_vni", with([](Outer& o) { o.vni = 1002; }), Ctr::decap_bad_vni},
    {"bad_ip_checksum", with([](Outer& o) { o.bad_ip_checksum = true; }), Ctr::decap_bad_outer},
    {"not_ethernet_payload", with([](Outer& o) { o.proto = 0x0800; }), Ctr::decap_bad_inner},
    {"ce_over_not_ect", with([](Outer& o) { o.ecn = 3; }), Ctr::decap_ecn_drop},
};

INSTANTIATE_TEST_SUITE_P(Geneve, DecapBad, ::testing::ValuesIn(kBad),
                         [](const auto& tpi) { return std::string(tpi.param.name); });

TEST_F(Decap, UnlocatedDestinationGoesToTheKernelThroughTheTwin) {
    h.topo.devs[Harness::kZtTwin].mac = {{0x02, 0, 0, 0, 0x01, 0x0a}};
    const auto inner = reply(0, 0x0af40263); // 10.244.2.99: no pod we know of
    run(geneve(Outer{}, inner));
    EXPECT_EQ(h.take(Harness::kPods).size(), 0u);
    auto twin = h.take(Harness::kZtTwin);
    ASSERT_EQ(twin.size(), 1u);
    EXPECT_EQ(c(Ctr::decap_unknown_pod), 1u);
    const auto* p = rte_pktmbuf_mtod(twin[0], const uint8_t*);
    ASSERT_EQ(twin[0]->pkt_len, inner.size());
    EXPECT_EQ(std::vector<uint8_t>(p, p + 12),
              (std::vector<uint8_t>{2, 0, 0, 0, 1, 0x0a, 2, 0, 0, 0, 2, 0x0a}))
        << "to the kernel twin's MAC, from ztunnel's";
    EXPECT_EQ(std::vector<uint8_t>(p + 12, p + inner.size()),
              std::vector<uint8_t>(inner.begin() + 12, inner.end()))
        << "the kernel routes it: we leave the TTL to it";
    rte_pktmbuf_free(twin[0]);
}

TEST_F(Decap, ExpiringTtlGoesToTheKernel) {
    FrameSpec f;
    f.src = 0x0a60000a;
    f.dst = kPod;
    f.ttl = 1;
    run(geneve(Outer{}, make_frame(f)));
    EXPECT_EQ(h.take(Harness::kPods).size(), 0u);
    auto twin = h.take(Harness::kZtTwin);
    EXPECT_EQ(twin.size(), 1u) << "the kernel answers with ICMP time exceeded";
    for (auto* m : twin) rte_pktmbuf_free(m);
}

TEST_F(Decap, NotOursGoesToTheKernelTwinUnchanged) {
    Outer o;
    o.src = 0x0af40263; // not the ztunnel
    const auto f = geneve(o, reply());
    run(f);
    o = Outer{};
    o.dport = 6082;
    run(geneve(o, reply()));
    auto twin = h.take(Harness::kZtTwin);
    ASSERT_EQ(twin.size(), 2u);
    EXPECT_EQ(twin[0]->pkt_len, f.size());
    EXPECT_EQ(h.take(Harness::kPods).size(), 0u);
    for (auto* m : twin) rte_pktmbuf_free(m);
}

TEST_F(Decap, TruncatedAtEveryLengthNeverDeliveredNeverCrashes) {
    const auto full = geneve(Outer{}, reply());
    for (size_t len = 0; len < full.size(); len++) {
        run(std::vector<uint8_t>(full.begin(), full.begin() + long(len)));
        EXPECT_EQ(h.take(Harness::kPods).size(), 0u) << len;
        for (auto* m : h.take(Harness::kZtTwin)) rte_pktmbuf_free(m);
    }
    run(full);
    auto out = h.take(Harness::kPods);
    EXPECT_EQ(out.size(), 1u);
    for (auto* m : out) rte_pktmbuf_free(m);
}

TEST(Ecn, Rfc6040DecapsulationTable) {
    // [outer][inner] -> resulting inner ECN, or -1 for drop (RFC 6040 §4.2, Figure 4).
    const int want[4][4] = {
        /* outer Not-ECT */ {0, 1, 2, 3},
        /* outer ECT(1)  */ {0, 1, 1, 3},
        /* outer ECT(0)  */ {0, 1, 2, 3},
        /* outer CE      */ {-1, 3, 3, 3},
    };
    for (uint8_t outer = 0; outer < 4; outer++)
        for (uint8_t inner = 0; inner < 4; inner++) {
            FrameSpec f;
            f.tos = uint8_t(0xa0 | inner);
            auto b = make_frame(f);
            uint8_t* ip = b.data() + 14;
            const bool ok = ecn_decapsulate(outer, ip);
            if (want[outer][inner] < 0) {
                EXPECT_FALSE(ok) << int(outer) << "/" << int(inner);
                continue;
            }
            ASSERT_TRUE(ok);
            EXPECT_EQ(ip[1] & 3, want[outer][inner]) << int(outer) << "/" << int(inner);
            EXPECT_EQ(ip[1] & 0xfc, 0xa0) << "DSCP untouched";
            EXPECT_EQ(rte_ipv4_cksum(reinterpret_cast<rte_ipv4_hdr*>(ip)), 0)
                << "checksum not updated";
        }
}

TEST_F(Decap, ArpForIstiooutInsideTheTunnelIsAnswered) {
    // pistioout (02:..:7f:02, 192.168.127.2) asks who has 192.168.127.1.
    std::vector<uint8_t> arp = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0,   0,   0,    0x7f,
                                0x02, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6,   4,   0x00, 0x01,
                                0x02, 0,    0,    0,    0x7f, 0x02, 192,  168, 127, 2,    0,
                                0,    0,    0,    0,    0,    192,  168,  127, 1};
    run(geneve(Outer{}, arp));
    auto out = h.take(Harness::kZt);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(c(Ctr::tunnel_arp_reply), 1u);
    const auto* b = rte_pktmbuf_mtod(out[0], const uint8_t*);
    ASSERT_EQ(out[0]->pkt_len, 50u + 14u + 28u);
    EXPECT_EQ(b[30], 10); // outer dst 10.244.2.10
    EXPECT_EQ(b[33], 10);
    const uint8_t* in = b + 50;
    EXPECT_EQ(std::vector<uint8_t>(in, in + 6), (std::vector<uint8_t>{0x02, 0, 0, 0, 0x7f, 0x02}));
    EXPECT_EQ(in[12], 0x08);
    EXPECT_EQ(in[13], 0x06);
    EXPECT_EQ(in[21], 2) << "an ARP reply";
    EXPECT_EQ(std::vector<uint8_t>(in + 22, in + 32),
              (std::vector<uint8_t>{0x02, 0, 0, 0, 0x7f, 0x01, 192, 168, 127, 1}));
    EXPECT_EQ(std::vector<uint8_t>(in + 32, in + 42),
              (std::vector<uint8_t>{0x02, 0, 0, 0, 0x7f, 0x02, 192, 168, 127, 2}));
    rte_pktmbuf_free(out[0]);
}

} // namespace
