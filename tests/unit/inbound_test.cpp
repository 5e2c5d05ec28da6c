// The node's inbound half (rule 103 / table 100, the skips, ztunnel's proxied connections
// and their return), stage by stage: where each frame goes, what it looks like, what is
// counted, and that nothing changes when inbound is not configured.
#include <gtest/gtest.h>

#include <rte_ip.h>

#include "control/ether.hpp"
#include "control/snapshot_builder.hpp"
#include "pipelines/node.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

constexpr uint32_t kPod = 0x0af40203, kOtherPod = 0x0af40214, kZtIp = 0x0af4020a,
                   kHost = 0x0af40201, kClient = 0xc0a83202; // 192.168.50.2, off the node
const rte_ether_addr kPodMac{{0x02, 0, 0, 0, 0x02, 0x03}};
const rte_ether_addr kZtMac{{0x02, 0, 0, 0, 0x02, 0x0a}};
const rte_ether_addr kIstioin{{0x02, 0, 0, 0, 0x7e, 0x01}};
const rte_ether_addr kPistioin{{0x02, 0, 0, 0, 0x7e, 0x02}};

FrameSpec tcp(uint32_t src, uint32_t dst, uint16_t sport = 40000, uint16_t dport = 9080) {
    FrameSpec f;
    f.src = src;
    f.dst = dst;
    f.sport = sport;
    f.dport = dport;
    return f;
}

// The frame of f with its TCP flags set (make_frame writes SYN).
std::vector<uint8_t> with_flags(const FrameSpec& f, uint8_t flags) {
    auto b = make_frame(f);
    b[14 + 20 + 13] = flags;
    return b;
}

// The lab's node with the inbound section on, `flows` as its flow table and kPod located on
// the pods port.
void inbound_lab(Harness& h, FlowTable& flows) {
    h.shared.flows = &flows;
    Config c = lab_config();
    c.inbound.enabled = true;
    c.inbound.inner_src_mac = {0x02, 0, 0, 0, 0x7e, 0x01};
    c.inbound.inner_dst_mac = {0x02, 0, 0, 0, 0x7e, 0x02};
    Topology t = h.topo;
    t.devs[t.link].mac = {{0x02, 0, 0, 0, 0x01, 0x0a}};
    h.set_snapshot(*build_snapshot(c, t, kZtMac, 0));
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    ASSERT_TRUE(
        h.pods->set_location(Ip4::from_host(kPod), PodLocation::of(Harness::kPods, kPodMac)));
}

class Inbound : public ::testing::Test {
  protected:
    Harness h;
    std::unique_ptr<FlowTable> flows;
    void SetUp() override {
        flows = std::make_unique<FlowTable>("tflows" + std::to_string(n_++), 8, *h.rcu);
        inbound_lab(h, *flows);
    }
    void from_kernel(const std::vector<uint8_t>& b) {
        rte_mbuf* m = h.frame(b);
        node_from_twin(h.ctx, Harness::kPodsTwin, &m, 1);
    }
    void from_ztunnel(const std::vector<uint8_t>& b) {
        rte_mbuf* m = h.frame(b);
        node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    }
    // The one frame sent to dev (freed by the caller via the returned bytes).
    std::vector<uint8_t> one(uint16_t dev) {
        auto out = h.take(dev);
        EXPECT_EQ(out.size(), 1u) << "frames sent to device " << dev;
        if (out.empty()) return {};
        std::vector<uint8_t> b(rte_pktmbuf_mtod(out[0], uint8_t*),
                               rte_pktmbuf_mtod(out[0], uint8_t*) + out[0]->data_len);
        for (rte_mbuf* m : out) rte_pktmbuf_free(m);
        return b;
    }
    static inline int n_ = 0;
};

TEST_F(Inbound, ToMeshedPodIsGeneveVni1000ToZtunnel) {
    const auto in = make_frame(tcp(kClient, kPod));
    from_kernel(in);
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::inbound), 1u);
    EXPECT_TRUE(h.take(Harness::kPods).empty()) << "never straight to the pod";
    const auto b = one(Harness::kZt);
    ASSERT_EQ(b.size(), 64 + in.size() - 14);
    EXPECT_EQ(0, std::memcmp(b.data(), kZtMac.addr_bytes, 6)) << "outer: to ztunnel's MAC";
    const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(b.data() + 14);
    EXPECT_EQ(ip->src_addr, Ip4::from_host(kHost).raw);
    EXPECT_EQ(ip->dst_addr, Ip4::from_host(kZtIp).raw);
    EXPECT_EQ(b[36] << 8 | b[37], 6081) << "UDP destination";
    EXPECT_EQ(b[46] << 16 | b[47] << 8 | b[48], 1000) << "VNI";
    EXPECT_EQ(0, std::memcmp(b.data() + 50, kPistioin.addr_bytes, 6)) << "inner dst pistioin";
    EXPECT_EQ(0, std::memcmp(b.data() + 56, kIstioin.addr_bytes, 6)) << "inner src istioin";
    EXPECT_EQ(0, std::memcmp(b.data() + 64, in.data() + 14, in.size() - 14))
        << "the client's packet unchanged (the kernel routed it already)";
}

TEST_F(Inbound, SkipsGoToThePodUnchanged) {
    struct {
        const char* what;
        std::vector<uint8_t> frame;
        Ctr want;
    } cases[] = {
        {"from the ztunnel IP", make_frame(tcp(kZtIp, kPod)), Ctr::skip_ztunnel},
        {"UDP",
         [] {
             FrameSpec f = tcp(kClient, kPod);
             f.proto = 17;
             return make_frame(f);
         }(),
         Ctr::skip_udp},
        {"Geneve to the tunnel port",
         [] {
             FrameSpec f = tcp(kClient, kPod, 50000, 6081);
             f.proto = 17;
             return make_frame(f);
         }(),
         Ctr::skip_udp},
        {"from the host IP (a probe)", make_frame(tcp(kHost, kPod)), Ctr::skip_host},
        {"to a non-meshed pod", make_frame(tcp(kClient, kOtherPod)), Ctr::pass},
    };
    for (auto& c : cases) {
        const uint64_t before = h.counter(Harness::kPodsTwin, c.want);
        from_kernel(c.frame);
        EXPECT_EQ(h.counter(Harness::kPodsTwin, c.want), before + 1) << c.what;
        EXPECT_EQ(one(Harness::kPods), c.frame) << c.what;
        EXPECT_TRUE(h.take(Harness::kZt).empty()) << c.what;
    }
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::rx), 0u) << "the stage does not count rx";
}

TEST_F(Inbound, ProbeRepliesAreNotRedirected) {
    from_kernel(make_frame(tcp(kHost, kPod, 33000, 8080)));
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::flow_insert), 1u);
    h.take(Harness::kPods);
    const auto reply = with_flags(tcp(kPod, kHost, 8080, 33000), 0x12);
    h.run_pods({h.frame(reply)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::skip_host), 1u);
    EXPECT_EQ(one(Harness::kPodsTwin), reply) << "to the kernel, as sent";
    EXPECT_TRUE(h.take(Harness::kZt).empty());
    // A meshed pod's own connection to the host address is still redirected.
    h.run_pods({h.frame(make_frame(tcp(kPod, kHost, 41000, 10250)))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u);
}

TEST_F(Inbound, ProxiedConnectionAndItsReturn) {
    // ztunnel opens its own connection to the pod with the client's address as source.
    const auto syn = make_frame(tcp(kClient, kPod, 45000, 9080));
    from_ztunnel(syn);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::proxied), 1u);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::flow_insert), 1u);
    auto b = one(Harness::kPods);
    ASSERT_EQ(b.size(), syn.size());
    EXPECT_EQ(0, std::memcmp(b.data(), kPodMac.addr_bytes, 6)) << "to the pod's MAC";
    EXPECT_EQ(b[14 + 8], 63) << "one routed hop";
    EXPECT_EQ(0, std::memcmp(b.data() + 26, syn.data() + 26, 8)) << "addresses untouched";
    // The pod's SYN-ACK: to ztunnel, unencapsulated, not to the client, not into istioout.
    const auto synack = with_flags(tcp(kPod, kClient, 9080, 45000), 0x12);
    h.run_pods({h.frame(synack)});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::proxy_return), 1u);
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 0u);
    b = one(Harness::kZt);
    ASSERT_EQ(b.size(), synack.size()) << "not encapsulated";
    EXPECT_EQ(0, std::memcmp(b.data(), kZtMac.addr_bytes, 6)) << "to ztunnel's MAC";
    EXPECT_EQ(b[14 + 8], 63);
    EXPECT_TRUE(h.take(Harness::kPodsTwin).empty());
    // The same connection's packets through the kernel (pod not located) are not redirected.
    from_kernel(with_flags(tcp(kClient, kPod, 45000, 9080), 0x10));
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::skip_proxied), 1u);
    one(Harness::kPods);
    // Another client port is a new connection: inbound again.
    from_kernel(make_frame(tcp(kClient, kPod, 45001, 9080)));
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::inbound), 1u);
    one(Harness::kZt);
    // ztunnel's packets from its own address are its own: passed, never learned.
    from_ztunnel(make_frame(tcp(kZtIp, kPod)));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::pass), 1u);
    EXPECT_EQ(flows->size(), 1u);
    h.take(Harness::kZtTwin);
}

TEST_F(Inbound, ClosedConnectionExpiresAndReplyIsClassifiedAgain) {
    from_ztunnel(make_frame(tcp(kClient, kPod, 45000, 9080)));
    one(Harness::kPods);
    h.run_pods({h.frame(with_flags(tcp(kPod, kClient, 9080, 45000), 0x11))}); // FIN
    one(Harness::kZt);
    const uint32_t now = flows->tick(rte_rdtsc());
    EXPECT_EQ(flows->expire(now, 1000000, 1000000), 0u) << "closing, not long enough";
    EXPECT_EQ(flows->expire(now + 10, 1000000, 5), 1u);
    EXPECT_TRUE(flows->empty());
    h.run_pods({h.frame(with_flags(tcp(kPod, kClient, 9080, 45000), 0x10))});
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::proxy_return), 1u) << "only the FIN";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 1u) << "a meshed pod's TCP again";
    h.take(Harness::kZt);
}

TEST_F(Inbound, FullTableDropsTheNewConnection) {
    for (uint16_t i = 0; i < 8; i++)
        from_ztunnel(make_frame(tcp(kClient, kPod, uint16_t(1000 + i))));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::flow_insert), 8u);
    h.take(Harness::kPods);
    from_ztunnel(make_frame(tcp(kClient, kPod, 2000)));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::drop_flow_full), 1u);
    EXPECT_TRUE(h.take(Harness::kPods).empty()) << "not delivered: its reply would go astray";
    EXPECT_TRUE(h.take(Harness::kZtTwin).empty());
    from_ztunnel(make_frame(tcp(kClient, kPod, 1003)));
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::flow_hit), 1u) << "known connections still pass";
    one(Harness::kPods);
}

TEST(InboundOff, KernelTrafficPassesAndZtunnelSpoofIsNotLearned) {
    Harness h; // lab_snapshot: no inbound section
    ASSERT_TRUE(h.pods->add(Ip4::from_host(kPod)));
    const auto in = make_frame(tcp(kClient, kPod));
    rte_mbuf* m = h.frame(in);
    node_from_twin(h.ctx, Harness::kPodsTwin, &m, 1);
    EXPECT_EQ(h.counter(Harness::kPodsTwin, Ctr::pass), 1u);
    auto out = h.take(Harness::kPods);
    ASSERT_EQ(out.size(), 1u);
    rte_pktmbuf_free(out[0]);
    m = h.frame(in);
    node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::pass), 1u);
    out = h.take(Harness::kZtTwin);
    ASSERT_EQ(out.size(), 1u);
    rte_pktmbuf_free(out[0]);
}

} // namespace

namespace {

// 10,000 concurrent proxied connections through the stages: each one's SYN learned on the
// ztunnel port, each reply returned to ztunnel; after their FINs and the closing timeout the
// table is empty again (no growth), and their next packets are classified as new.
TEST(InboundScale, TenThousandConnectionsComeAndGo) {
    constexpr uint32_t kConns = 10000;
    Harness h;
    FlowTable flows("tflows_scale", 16384, *h.rcu);
    inbound_lab(h, flows);
    if (HasFatalFailure()) return;
    auto client = [](uint32_t i) { return kClient + (i >> 14); };
    auto port = [](uint32_t i) { return uint16_t(1024 + (i & 0x3fff)); };
    auto drain = [&](uint16_t dev) {
        size_t n = 0;
        for (rte_mbuf* m : h.take(dev)) {
            rte_pktmbuf_free(m);
            n++;
        }
        return n;
    };
    auto burst = [&](uint16_t dev, Stage stage, auto make) {
        for (uint32_t i = 0; i < kConns; i += kBurst) {
            rte_mbuf* pkts[kBurst];
            const uint16_t n = uint16_t(std::min<uint32_t>(kBurst, kConns - i));
            for (uint16_t k = 0; k < n; k++) pkts[k] = h.frame(make(i + k));
            stage(h.ctx, dev, pkts, n);
            drain(Harness::kPods);
            drain(Harness::kZt);
            drain(Harness::kPodsTwin);
            drain(Harness::kZtTwin);
        }
    };
    burst(Harness::kZt, node_from_ztunnel,
          [&](uint32_t i) { return make_frame(tcp(client(i), kPod, port(i))); });
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::proxied), kConns);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::drop_flow_full), 0u);
    EXPECT_EQ(flows.size(), kConns);
    burst(Harness::kPods, node_from_pods,
          [&](uint32_t i) { return with_flags(tcp(kPod, client(i), 9080, port(i)), 0x11); });
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::proxy_return), kConns) << "every reply to ztunnel";
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), 0u);
    const uint32_t now = flows.tick(rte_rdtsc());
    EXPECT_EQ(flows.expire(now + 100, 1u << 20, 50), kConns) << "closed: expired";
    EXPECT_EQ(flows.size(), 0u);
    burst(Harness::kPods, node_from_pods,
          [&](uint32_t i) { return with_flags(tcp(kPod, client(i), 9080, port(i)), 0x10); });
    EXPECT_EQ(h.counter(Harness::kPods, Ctr::redirect), kConns) << "forgotten: classified anew";
}

// attach: xdp: the uplink port's stage (the kernel's program chose the frames before the kernel
// routed them) and, with no twin, the way back to the kernel's routes through that port.
class XdpInbound : public Inbound {
  protected:
    uint16_t up = 0;
    void SetUp() override {
        Inbound::SetUp();
        up = uint16_t(h.topo.devs.size()); // an uplink port with attach: xdp, no twin
        h.topo.devs.push_back({4, DevKind::XdpUplink, kNoDev, {{0x02, 0, 0, 0, 0x0c, 0x01}}});
        h.topo.xdp_uplink = up;
        h.topo.devs[Harness::kZt].peer = kNoDev; // ztunnel's port attach: xdp: no twin either
        h.counters = std::vector<DeviceCounters>(h.topo.devs.size()); // fresh: none counted yet
        h.ctx.tx.assign(h.topo.devs.size(), TxQueue{});
    }
};

TEST_F(XdpInbound, UplinkFramesGoIntoIstioinAfterTheRoutedHop) {
    const auto in = make_frame(tcp(kClient, kPod));
    rte_mbuf* m = h.frame(in);
    node_from_xdp_uplink(h.ctx, up, &m, 1);
    EXPECT_EQ(h.counter(up, Ctr::inbound), 1u);
    const auto b = one(Harness::kZt);
    ASSERT_EQ(b.size(), 64 + in.size() - 14);
    EXPECT_EQ(b[46] << 16 | b[47] << 8 | b[48], 1000) << "VNI";
    EXPECT_EQ(0, std::memcmp(b.data() + 50, kPistioin.addr_bytes, 6)) << "inner dst pistioin";
    auto routed = in;
    auto* rip = reinterpret_cast<rte_ipv4_hdr*>(routed.data() + 14);
    rip->time_to_live = 63;
    rip->hdr_checksum = 0;
    rip->hdr_checksum = rte_ipv4_cksum(rip);
    EXPECT_EQ(0, std::memcmp(b.data() + 64, routed.data() + 14, in.size() - 14))
        << "the client's packet as the kernel's table 100 route would hand it to istioin";
    // What the program never hands over (it passes TTL 1), or a frame that is no IPv4: dropped
    // and counted, never sent on.
    FrameSpec f = tcp(kClient, kPod);
    f.ttl = 1;
    m = h.frame(make_frame(f));
    node_from_xdp_uplink(h.ctx, up, &m, 1);
    EXPECT_EQ(h.counter(up, Ctr::drop_no_twin), 1u);
    EXPECT_TRUE(h.take(Harness::kZt).empty());
}

TEST_F(XdpInbound, DecapsulatedToTheClientIsRoutedByTheKernelThroughTheUplink) {
    FrameSpec f = tcp(kPod, kClient, 9080, 40000); // ztunnel's reply to the client (pistioin)
    const auto inner = make_frame(f);
    Outer o;
    o.vni = 1000;
    rte_mbuf* m = h.frame(geneve(o, inner));
    node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::decap_unknown_pod), 1u);
    const auto b = one(up);
    ASSERT_EQ(b.size(), inner.size());
    EXPECT_EQ(b[14 + 8], 63) << "one routed hop";
    EXPECT_EQ(0, std::memcmp(b.data() + 26, inner.data() + 26, 8)) << "addresses untouched";
    // TTL 1: the kernel would answer; ztgeneve has no way to it here.
    f.ttl = 1;
    m = h.frame(geneve(o, make_frame(f)));
    node_from_ztunnel(h.ctx, Harness::kZt, &m, 1);
    EXPECT_EQ(h.counter(Harness::kZt, Ctr::drop_no_twin), 1u);
    EXPECT_TRUE(h.take(up).empty());
}

} // namespace
