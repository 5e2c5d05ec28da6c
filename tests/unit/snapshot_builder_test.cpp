// build_snapshot: what the workers read, from the config, the topology and the tunnel
// peer's MAC. Checked field by field and in the encapsulation template's bytes.
#include <gtest/gtest.h>

#include <cstring>

#include "config/config.hpp"
#include "control/snapshot_builder.hpp"
#include "dataplane/geneve.hpp"
#include "tests/support/node_yaml.hpp"

using namespace ztg;

namespace {

// kNodeYaml with every tunnel key the builder reads set away from its default.
const std::string kNode = [] {
    std::string y = test::kNodeYaml + "redirect: {protocols: [tcp, udp]}\n";
    y.insert(y.find("tunnel:\n") + 8,
             "  vni: 4242\n  udp_port: 7000\n  mtu: 1400\n  too_big: drop\n"
             "  arp_refresh_ms: 2000\n  inner_ip: 192.168.100.1\n");
    return y;
}();

const rte_ether_addr kLinkMac = {{0x02, 0, 0, 0, 0x01, 0x0a}};
const rte_ether_addr kPeerMac = {{0x02, 0, 0, 0, 0x02, 0x0a}};

Config load(const std::string& yaml) {
    auto c = parse_config(yaml, "ztg.yaml");
    EXPECT_TRUE(c.ok()) << c.error();
    return c.ok() ? *c : Config{};
}

// pods0, its twin, zt (the link).
Topology node_topology() {
    Topology t;
    t.devs.resize(3);
    t.devs[0].kind = DevKind::Pods;
    t.devs[0].peer = 1;
    t.devs[1].kind = DevKind::Twin;
    t.devs[1].peer = 0;
    t.devs[2].kind = DevKind::Ztunnel;
    t.devs[2].mac = kLinkMac;
    t.link = 2;
    return t;
}

bool same(const rte_ether_addr& a, const rte_ether_addr& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

uint32_t vni_of(const EncapTemplate& t) {
    const uint8_t* g = t.bytes.data() + kGeneveOff;
    return uint32_t(g[4]) << 16 | uint32_t(g[5]) << 8 | g[6];
}

} // namespace

TEST(SnapshotBuilder, NodeFromConfigAndTopology) {
    const auto s = build_snapshot(load(kNode), node_topology(), kPeerMac, 7);
    EXPECT_EQ(s->generation, 7u);
    EXPECT_EQ(s->local_ip, ip4(10, 244, 2, 1));
    EXPECT_EQ(s->remote_ip, ip4(10, 244, 2, 10));
    EXPECT_TRUE(s->redirects(6));
    EXPECT_TRUE(s->redirects(17));
    EXPECT_FALSE(s->redirects(1));
    EXPECT_EQ(s->max_inner_len, 1400 - kOuterLen);
    EXPECT_FALSE(s->fragment) << "too_big: drop";
    ASSERT_EQ(s->ntunnels, 1) << "a node has one tunnel: istioout";
    EXPECT_EQ(s->outbound().vni, 4242u);
    EXPECT_EQ(s->outbound().dev, kNoDev);
    EXPECT_EQ(s->outbound().inner_ip, ip4(192, 168, 100, 1));
    EXPECT_TRUE(same(s->outbound().inner_src, {{0x02, 0, 0, 0, 0x7f, 0x01}}));
    EXPECT_TRUE(same(s->outbound().inner_dst, {{0x02, 0, 0, 0, 0x7f, 0x02}}));
    EXPECT_EQ(s->by_vni(4242), &s->outbound());
    EXPECT_EQ(s->by_vni(1000), nullptr);
    EXPECT_TRUE(same(s->link_mac, kLinkMac));
    EXPECT_TRUE(s->nexthop_known);
    EXPECT_TRUE(same(s->nexthop_mac, kPeerMac));
    EXPECT_EQ(s->arp_refresh_ms, 2000u) << "resolved by ARP: refreshed";
    // Decapsulation accepts what the peer sends: its address to ours, on our port.
    EXPECT_EQ(s->decap.local, ip4(10, 244, 2, 1));
    EXPECT_EQ(s->decap.remote, ip4(10, 244, 2, 10));
    EXPECT_EQ(s->decap.udp_port, 7000);
}

TEST(SnapshotBuilder, TemplateCarriesTheTunnel) {
    const auto s = build_snapshot(load(kNode), node_topology(), kPeerMac, 1);
    const uint8_t* b = s->outbound().tmpl.bytes.data();
    EXPECT_EQ(std::memcmp(b, kPeerMac.addr_bytes, 6), 0) << "outer destination: the peer";
    EXPECT_EQ(std::memcmp(b + 6, kLinkMac.addr_bytes, 6), 0) << "outer source: the link";
    const uint8_t local[] = {10, 244, 2, 1}, remote[] = {10, 244, 2, 10};
    EXPECT_EQ(std::memcmp(b + kOuterIpOff + 12, local, 4), 0);
    EXPECT_EQ(std::memcmp(b + kOuterIpOff + 16, remote, 4), 0);
    EXPECT_EQ(b[kOuterUdpOff + 2] << 8 | b[kOuterUdpOff + 3], 7000);
    EXPECT_EQ(vni_of(s->outbound().tmpl), 4242u);
    const uint8_t inner_dst[] = {0x02, 0, 0, 0, 0x7f, 0x02}, inner_src[] = {0x02, 0, 0, 0, 0x7f, 1};
    EXPECT_EQ(std::memcmp(b + kGeneveOff + 8, inner_dst, 6), 0);
    EXPECT_EQ(std::memcmp(b + kGeneveOff + 14, inner_src, 6), 0);
    EXPECT_FALSE(s->outbound().tmpl.udp_checksum);
}

TEST(SnapshotBuilder, PeerNotYetResolved) {
    const auto s = build_snapshot(load(kNode), node_topology(), std::nullopt, 1);
    EXPECT_FALSE(s->nexthop_known);
    EXPECT_TRUE(same(s->nexthop_mac, {}));
    EXPECT_EQ(s->arp_refresh_ms, 2000u);
}

TEST(SnapshotBuilder, StaticNextHopIsNeverAsked) {
    std::string y = kNode;
    y.replace(y.find("  arp_refresh_ms: 2000\n"), 23, "  next_hop_mac: \"02:00:00:00:02:0a\"\n");
    const auto s = build_snapshot(load(y), node_topology(), kPeerMac, 1);
    EXPECT_EQ(s->arp_refresh_ms, 0u);
    EXPECT_TRUE(s->nexthop_known);
}

TEST(SnapshotBuilder, EndpointTapsGetTheirVni) {
    const Config c = load(R"(
role: endpoint
ports:
  - {name: up, role: uplink, devargs: "net_af_packet0,iface=eth0", twin: "net_tap0,iface=up0"}
  - {name: out, role: tunnel, devargs: "net_tap1,iface=pistioout"}
  - {name: in, role: tunnel, devargs: "net_tap2,iface=pistioin", vni: 1000}
tunnel: {local_ip: 10.244.2.10, remote_ip: 10.244.2.1, udp_checksum: true}
)");
    Topology t;
    t.devs.resize(4);
    t.devs[0] = {0, DevKind::Uplink, 1, kLinkMac};
    t.devs[1] = {1, DevKind::Twin, 0, kLinkMac};
    t.devs[2] = {2, DevKind::Tunnel, kNoDev, {}, *c.ports[1].vni};
    t.devs[3] = {3, DevKind::Tunnel, kNoDev, {}, *c.ports[2].vni};
    t.link = 0;
    const auto s = build_snapshot(c, t, kPeerMac, 1);
    ASSERT_EQ(s->ntunnels, 2) << "one tunnel per tap";
    EXPECT_EQ(s->by_dev(0), nullptr);
    EXPECT_EQ(s->by_dev(1), nullptr);
    ASSERT_NE(s->by_dev(2), nullptr);
    ASSERT_NE(s->by_dev(3), nullptr);
    EXPECT_EQ(s->by_dev(2)->vni, 1001u) << "tunnel.vni by default";
    EXPECT_EQ(vni_of(s->by_dev(2)->tmpl), 1001u);
    EXPECT_EQ(s->by_dev(3)->vni, 1000u);
    EXPECT_EQ(vni_of(s->by_dev(3)->tmpl), 1000u);
    EXPECT_EQ(s->by_vni(1000), s->by_dev(3));
    for (size_t d : {2, 3}) {
        EXPECT_TRUE(s->by_dev(uint16_t(d))->tmpl.udp_checksum);
        // Apart from the VNI, the same headers for both taps.
        std::array<uint8_t, EncapTemplate::kSize> a = s->by_dev(uint16_t(d))->tmpl.bytes,
                                                  b = s->by_dev(2)->tmpl.bytes;
        std::memset(a.data() + kGeneveOff + 4, 0, 3);
        std::memset(b.data() + kGeneveOff + 4, 0, 3);
        EXPECT_EQ(a, b) << "device " << d;
    }
}
