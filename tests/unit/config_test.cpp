// Config validation: good configs load with their defaults; each bad one is refused with
// the key path and the reason a user needs to fix it.
#include <gtest/gtest.h>

#include "config/config.hpp"
#include "tests/support/node_yaml.hpp"

using namespace ztg;

namespace {

const std::string kGood = test::kNodeYaml;

TEST(Config, GoodConfigAndDefaults) {
    auto c = parse_config(kGood, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->tunnel.vni, 1001u);
    EXPECT_EQ(c->tunnel.udp_port, 6081);
    EXPECT_FALSE(c->tunnel.udp_checksum);
    EXPECT_FALSE(c->tunnel.next_hop_mac.has_value()) << "default is ARP";
    EXPECT_EQ(c->tunnel.mtu, 1500);
    EXPECT_TRUE(c->tunnel.fragment) << "too_big defaults to fragment, as the kernel does";
    EXPECT_EQ(c->protocols, std::vector<uint8_t>{6});
    EXPECT_EQ(c->dpdk.workers, 1u);
    ASSERT_EQ(c->ports.size(), 2u);
    EXPECT_EQ(*c->ports[0].twin, "net_tap0,iface=t0");
    EXPECT_EQ(c->pods.size(), 2u);
    EXPECT_EQ(c->pods[0], ip4(10, 244, 2, 3));
    EXPECT_EQ(c->pods[0].raw, 0x0302f40au) << "network byte order inside";
    EXPECT_EQ(format_ip(c->pods[1]), "10.244.2.2");
    EXPECT_EQ(c->tunnel.inner_ip, ip4(192, 168, 127, 1));
    EXPECT_EQ(c->kernel.istioout_peer, ip4(192, 168, 127, 2));
    EXPECT_EQ(c->kernel.istioin, "istioin");
    EXPECT_FALSE(c->kernel.dns_capture) << "DNS capture is off unless asked for";
    EXPECT_EQ(c->ports[0].segment, Segment::Kernel) << "the pod's kernel segments by default";
}

TEST(Config, SegmentOff) {
    std::string y = kGood;
    y.replace(y.find("twin: \"net_tap0,iface=t0\"}"), 26,
              "twin: \"net_tap0,iface=t0\", segment: off}");
    auto c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->ports[0].segment, Segment::Off);
    EXPECT_EQ(c->ports[1].segment, Segment::Kernel);
}

TEST(Config, AttachXdp) {
    std::string y = kGood;
    const std::string zt = "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}";
    y.replace(y.find(zt), zt.size(), "{name: zt, role: ztunnel, attach: xdp, links: [vethzt]}");
    auto c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->ports[1].kind, DevKind::XdpZtunnel);
    EXPECT_EQ(c->ports[1].links, std::vector<std::string>{"vethzt"});
    EXPECT_EQ(c->ports[1].agg, "ztg1k");
    EXPECT_EQ(c->ports[1].devargs, "net_af_xdp1,iface=ztg1x,start_queue=0,queue_count=1");
    EXPECT_TRUE(c->tunnel.next_hop_mac.has_value()) << "the kernel resolves ztunnel's MAC";
    EXPECT_EQ(c->ports[0].kind, DevKind::Pods) << "attach: device by default";
}

// Inbound with attach: xdp: the node's uplink links are a port of their own, {role: uplink,
// attach: xdp}, which needs the inbound section, and which inbound needs beside an xdp pods port.
TEST(Config, AttachXdpUplink) {
    std::string y = kGood;
    const std::string pods =
        "role: pods, devargs: \"net_af_packet0,iface=v0\", twin: \"net_tap0,iface=t0\"}";
    const std::string zt = "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}";
    y.replace(y.find(pods), pods.size(), "role: pods, attach: xdp, links: [vethpp]}");
    y.replace(y.find(zt), zt.size(),
              "{name: zt, role: ztunnel, attach: xdp, links: [vethzt]}\n"
              "  - {name: up, role: uplink, attach: xdp, links: [eth0, eth1]}");
    const std::string in =
        "inbound: {inner_src_mac: \"02:00:00:00:7e:01\", inner_dst_mac: \"02:00:00:00:7e:02\"}\n";
    auto c = parse_config(y + in, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    ASSERT_EQ(c->ports.size(), 3u);
    EXPECT_EQ(c->ports[2].kind, DevKind::XdpUplink);
    EXPECT_EQ(c->ports[2].links, (std::vector<std::string>{"eth0", "eth1"}));
    EXPECT_EQ(c->ports[2].agg, "ztg2k");
    EXPECT_EQ(port_kind(DevKind::XdpUplink).xdp_program, "ztg_xdp_uplink");
    EXPECT_EQ(parse_config(y, "bad.yaml").error(),
              "ports[2].role: uplink needs the inbound section (its links' traffic to meshed pods "
              "is what goes into istioin)");
    std::string no_uplink = y;
    const size_t up = no_uplink.find("  - {name: up,");
    no_uplink.erase(up, no_uplink.find('\n', up) + 1 - up);
    EXPECT_NE(parse_config(no_uplink + in, "bad.yaml")
                  .error()
                  .find("inbound: with a pods port attach: xdp, a port {role: uplink, attach: "
                        "xdp, links: [...]} is required"),
              std::string::npos);
    std::string two = y;
    two.replace(two.find("  - {name: up,"), 0,
                "  - {name: up2, role: uplink, attach: xdp, links: [eth2]}\n");
    EXPECT_NE(
        parse_config(two + in, "bad.yaml").error().find("ports[3].role: one uplink port only"),
        std::string::npos)
        << parse_config(two + in, "bad.yaml").error();
    std::string device = y;
    device.replace(device.find("role: uplink, attach: xdp"), 25, "role: uplink");
    EXPECT_EQ(parse_config(device + in, "bad.yaml").error(),
              "ports[2].attach: role uplink of a node needs attach: xdp (the node's links toward "
              "clients outside it)");
    std::string auto_links = y;
    auto_links.replace(auto_links.find("links: [eth0, eth1]"), 19, "links: auto");
    EXPECT_EQ(parse_config(auto_links + in, "bad.yaml").error(),
              "ports[2].links: auto is for a pods port (the uplink port names the node's links "
              "toward clients outside it)");
}

// The aggregation pairs carry the tunnel's packets at tunnel.mtu: up to what a veth with
// an XDP program takes (the kernel refuses the program above 3506).
TEST(Config, AttachXdpTunnelMtuBoundedByVethXdp) {
    std::string y = kGood;
    const std::string zt = "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}";
    y.replace(y.find(zt), zt.size(), "{name: zt, role: ztunnel, attach: xdp, links: [vethzt]}");
    y.replace(y.find("  local_ip:"), 0, "  mtu: 3506\n");
    auto c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->tunnel.mtu, kXdpMaxMtu);
    y.replace(y.find("mtu: 3506"), 9, "mtu: 3507");
    c = parse_config(y, "bad.yaml");
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().find("tunnel.mtu: 3507 is above 3506, the largest MTU of a veth with XDP "
                             "(ports with attach: xdp)"),
              std::string::npos)
        << c.error();
}

TEST(Config, AttachXdpLinksAuto) {
    std::string y = kGood;
    const std::string pods =
        "role: pods, devargs: \"net_af_packet0,iface=v0\", twin: \"net_tap0,iface=t0\"}";
    y.replace(y.find(pods), pods.size(), "role: pods, attach: xdp, links: auto}");
    y += "kernel: {mode: program, ztunnel_dev: vethzt}\n";
    auto c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->ports[0].kind, DevKind::XdpPods);
    EXPECT_TRUE(c->ports[0].links_auto);
    EXPECT_TRUE(c->ports[0].links.empty());
    EXPECT_FALSE(c->ports[1].links_auto);
    // two pods ports with auto: a discovered link would not know its port
    y.replace(y.find("  - {name: zt,"), 0,
              "  - {name: pods1, role: pods, attach: xdp, links: auto}\n");
    auto two = parse_config(y, "good.yaml");
    ASSERT_FALSE(two.ok());
    EXPECT_NE(two.error().find("ports[1].links: auto on one pods port only"), std::string::npos)
        << two.error();
}

struct Bad {
    const char* what;
    std::string from, to; // replace `from` in kGood by `to`
    const char* message;  // the whole message, or its machine-independent start
};

void PrintTo(const Bad& b, std::ostream* os) {
    *os << b.what;
}

class BadConfig : public ::testing::TestWithParam<Bad> {};

TEST_P(BadConfig, RefusedWithKeyAndReason) {
    const Bad& b = GetParam();
    std::string y = kGood;
    const auto at = y.find(b.from);
    ASSERT_NE(at, std::string::npos) << b.from;
    y.replace(at, b.from.size(), b.to);
    auto c = parse_config(y, "bad.yaml");
    ASSERT_FALSE(c.ok()) << b.what;
    // Messages are compared whole; two end where the text depends on the machine.
    EXPECT_TRUE(c.error().starts_with(b.message)) << "got: " << c.error();
}

const Bad kBad[] = {
    {"unknown top key", "role: node", "role: node\nrolle: x", "rolle: unknown key"},
    {"unknown nested key",
     "  local_ip:", "  locl_ip: 1.2.3.4\n  local_ip:", "tunnel.locl_ip: unknown key"},
    {"wrong role", "role: node", "role: router", "role: 'router' is not a role (node or endpoint)"},
    {"bad ip", "local_ip: 10.244.2.1", "local_ip: 10.244.2.300",
     "tunnel.local_ip: '10.244.2.300' is not an IPv4 address (dotted quad)"},
    {"vni too big", "  local_ip:", "  vni: 16777216\n  local_ip:",
     "tunnel.vni: 16777216 is out of range 0..16777215"},
    {"port 0",
     "  local_ip:", "  udp_port: 0\n  local_ip:", "tunnel.udp_port: 0 is out of range 1..65535"},
    {"wrong type", "  local_ip:", "  udp_checksum: maybe\n  local_ip:",
     "tunnel.udp_checksum: expected true or false, got 'maybe'"},
    {"short mac", "\"02:00:00:00:7f:01\"", "\"02:00:00:00:7f\"",
     "tunnel.inner_src_mac: '02:00:00:00:7f' is not a MAC address (six hex pairs like "
     "02:00:00:00:00:01)"},
    {"multicast mac", "\"02:00:00:00:7f:02\"", "\"01:00:5e:00:00:01\"",
     "tunnel.inner_dst_mac: 01:00:5e:00:00:01 is a multicast/broadcast MAC"},
    {"missing required", "  remote_ip: 10.244.2.10\n", "",
     "tunnel.remote_ip: required (the ztunnel pod address, outer destination)"},
    {"duplicate device", "net_af_packet1,iface=v1", "net_af_packet0,iface=v1",
     "ports[1].devargs: duplicate device 'net_af_packet0' (also ports[0].devargs)"},
    {"duplicate name", "name: zt", "name: pods0",
     "ports[1].name: duplicate port name 'pods0' (also ports[0].name)"},
    {"no ztunnel port", "role: ztunnel", "role: pods",
     "ports: exactly one port with role ztunnel is required, found 0"},
    {"bad port role", "role: ztunnel", "role: tunnel",
     "ports[1].role: 'tunnel' is not a port role of a node (pods or ztunnel or uplink (attach: "
     "xdp))"},
    {"duplicate pod", "[10.244.2.3, 10.244.2.2]", "[10.244.2.3, 10.244.2.3]",
     "pods[1]: duplicate pod 10.244.2.3 (also pods[0])"},
    {"pods not a list", "[10.244.2.3, 10.244.2.2]", "10.244.2.3",
     "pods: expected a list, got '10.244.2.3'"},
    {"ztunnel as pod", "[10.244.2.3, 10.244.2.2]", "[10.244.2.10]",
     "pods[0]: 10.244.2.10 is the ztunnel (tunnel.remote_ip)"},
    {"bad protocol", "role: node", "role: node\nredirect: {protocols: [tcp, gre]}",
     "redirect.protocols[1]: 'gre' is not a protocol (tcp, udp, icmp, sctp or a number 0-255)"},
    {"too many workers", "role: node", "role: node\ndpdk: {workers: 64}",
     "dpdk.workers: 64 workers but this machine has "},
    {"in-memory with no-huge", "role: node", "role: node\ndpdk: {eal_args: [--in-memory]}",
     "dpdk.eal_args[0]: --in-memory cannot be combined with no_huge (EAL refuses it)"},
    {"mtu too small",
     "  local_ip:", "  mtu: 100\n  local_ip:", "tunnel.mtu: 100 is out of range 576..9216"},
    {"too_big neither fragment nor drop", "  local_ip:", "  too_big: yes\n  local_ip:",
     "tunnel.too_big: 'yes' is neither fragment nor drop"},
    {"same local and remote", "remote_ip: 10.244.2.10", "remote_ip: 10.244.2.1",
     "tunnel.remote_ip: must differ from tunnel.local_ip"},
    {"segment neither kernel nor off", "twin: \"net_tap0,iface=t0\"}",
     "twin: \"net_tap0,iface=t0\", segment: xdp}",
     "ports[0].segment: expected kernel or off, got 'xdp'"},
    {"segment on a device other than net_af_packet", "devargs: \"net_af_packet0,iface=v0\"",
     "devargs: \"net_pcap0,iface=v0\", segment: kernel",
     "ports[0].segment: applies to net_af_packet ports only (devargs 'net_pcap0')"},
    {"yaml syntax", "role: node", "role: [node", "bad.yaml:"},
    {"attach neither device nor xdp", "role: pods, devargs", "role: pods, attach: afxdp, devargs",
     "ports[0].attach: expected device or xdp, got 'afxdp'"},
    {"attach xdp with devargs", "role: pods, devargs", "role: pods, attach: xdp, devargs",
     "ports[0].devargs: not with attach: xdp (ztgeneve opens its own aggregation device)"},
    {"attach xdp without links", "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}",
     "{name: zt, role: ztunnel, attach: xdp}",
     "ports[1].links: required with attach: xdp (the kernel's links, e.g. [veth1234abcd], or "
     "auto on a pods port)"},
    {"xdp links neither list nor auto",
     "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}",
     "{name: zt, role: ztunnel, attach: xdp, links: vethzt}",
     "ports[1].links: expected a list of link names or auto, got 'vethzt'"},
    {"xdp links auto on the ztunnel port",
     "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}",
     "{name: zt, role: ztunnel, attach: xdp, links: auto}",
     "ports[1].links: auto is for a pods port (the ztunnel port names ztunnel's veth)"},
    {"xdp links auto without the kernel mirror",
     "role: pods, devargs: \"net_af_packet0,iface=v0\", "
     "twin: \"net_tap0,iface=t0\"}",
     "role: pods, attach: xdp, links: auto}",
     "ports[0].links: auto needs kernel.mode observe or program (the meshed pods, whose links it "
     "finds, come from the kernel mirror)"},
    {"ztunnel xdp with two links",
     "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}",
     "{name: zt, role: ztunnel, attach: xdp, links: [a, b]}",
     "ports[1].links: the ztunnel port has exactly one link (ztunnel's veth), got 2"},
    {"xdp link name too long", "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}",
     "{name: zt, role: ztunnel, attach: xdp, links: [abcdefghijklmnop]}",
     "ports[1].links[0]: 'abcdefghijklmnop' is not a link name (1 to 15 characters, no space, / "
     "or :)"},
    {"links without attach xdp", "role: pods, devargs", "role: pods, links: [a], devargs",
     "ports[0].links: only with attach: xdp"},
};

INSTANTIATE_TEST_SUITE_P(Config, BadConfig, ::testing::ValuesIn(kBad), [](const auto& tpi) {
    std::string n = tpi.param.what;
    for (auto& ch : n)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return n;
});

const std::string kEndpoint = R"(
role: endpoint
ports:
  - {name: uplink, role: uplink, devargs: "net_af_packet0,iface=ztlink", twin: "net_tap0,iface=eth0"}
  - {name: pistioout, role: tunnel, devargs: "net_tap1,iface=pistioout"}
  - {name: pistioin, role: tunnel, vni: 1000, devargs: "net_tap2,iface=pistioin"}
tunnel: {local_ip: 10.244.2.10, remote_ip: 10.244.2.1}
)";

TEST(Config, EndpointRole) {
    auto c = parse_config(kEndpoint, "ep.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_EQ(c->role, Role::Endpoint);
    EXPECT_EQ(c->ports[1].kind, DevKind::Tunnel);
    EXPECT_EQ(*c->ports[1].vni, 1001u) << "a tunnel port defaults to tunnel.vni";
    EXPECT_EQ(*c->ports[2].vni, 1000u);
}

TEST(Config, EndpointRefusesNodeKeysAndDuplicateVnis) {
    std::string y = kEndpoint + "pods: [10.244.2.3]\n";
    EXPECT_EQ(parse_config(y, "ep.yaml").error(), "pods: only for role node");
    y = kEndpoint;
    y.replace(y.find("remote_ip: 10.244.2.1}"), 22, "remote_ip: 10.244.2.1, too_big: drop}");
    EXPECT_EQ(parse_config(y, "ep.yaml").error(),
              "tunnel.too_big: only for role node (the endpoint's taps have the tunnel's MTU: the "
              "kernel fragments)");
    y = kEndpoint;
    y.replace(y.find("vni: 1000"), 9, "vni: 1001");
    EXPECT_EQ(parse_config(y, "ep.yaml").error(),
              "ports[2].vni: VNI 1001 is carried by ports[1] already");
    y = kEndpoint;
    y.replace(y.find("role: uplink"), 12, "role: pods");
    EXPECT_EQ(parse_config(y, "ep.yaml").error(),
              "ports[0].role: 'pods' is not a port role of an endpoint (uplink or tunnel)");
}

TEST(Config, FastPath) {
    EXPECT_TRUE(parse_config(kGood, "good.yaml")->dpdk.vector_path) << "vector by default";
    auto c = parse_config(kGood + "dpdk:\n  fast_path: scalar\n", "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_FALSE(c->dpdk.vector_path);
    EXPECT_EQ(parse_config(kGood + "dpdk:\n  fast_path: avx512\n", "bad.yaml").error(),
              "dpdk.fast_path: 'avx512': vector or scalar");
}

TEST(Config, TooBigDrop) {
    std::string y = kGood;
    y.replace(y.find("  local_ip:"), 11, "  too_big: drop\n  local_ip:");
    auto c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_FALSE(c->tunnel.fragment);
}

TEST(Config, InboundOffByDefaultAndItsDefaults) {
    auto c = parse_config(kGood, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_FALSE(c->inbound.enabled);
    const std::string y = kGood + R"(inbound:
  inner_src_mac: "02:00:00:00:7e:01"
  inner_dst_mac: "02:00:00:00:7e:02"
  flows: {max: 1000, idle_timeout_s: 30}
)";
    c = parse_config(y, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_TRUE(c->inbound.enabled);
    EXPECT_EQ(c->inbound.vni, 1000u);
    EXPECT_EQ(c->inbound.inner_ip, ip4(192, 168, 126, 1));
    EXPECT_EQ(c->inbound.protocols, std::vector<uint8_t>{6});
    EXPECT_EQ(c->inbound.max_flows, 1000u);
    EXPECT_EQ(c->inbound.idle_timeout_s, 30u);
    EXPECT_EQ(c->inbound.closing_timeout_s, 120u);
}

TEST(Config, InboundRefusals) {
    const std::string macs = "  inner_src_mac: \"02:00:00:00:7e:01\"\n"
                             "  inner_dst_mac: \"02:00:00:00:7e:02\"\n";
    auto err = [&](const std::string& extra) {
        return parse_config(kGood + "inbound:\n" + macs + extra, "bad.yaml").error();
    };
    EXPECT_EQ(err("  vni: 1001\n"), "inbound.vni: must differ from tunnel.vni 1001");
    EXPECT_EQ(err("  protocols: [tcp, udp]\n"),
              "inbound.protocols[1]: UDP is never redirected inbound (the kernel's `-p udp` skip, "
              "mark 0x220)");
    EXPECT_EQ(err("  inner_ip: 192.168.127.1\n"),
              "inbound.inner_ip: must differ from tunnel.inner_ip (istioout's address)");
    EXPECT_EQ(err("  flows: {max: 4}\n"), "inbound.flows.max: 4 is out of range 8..16777216");
    EXPECT_EQ(err("  flows: {idle: 4}\n"), "inbound.flows.idle: unknown key");
    EXPECT_EQ(parse_config(kGood + "inbound: {inner_dst_mac: \"02:00:00:00:7e:02\"}\n", "bad.yaml")
                  .error(),
              "inbound.inner_src_mac: required (the MAC of istioin)");
}

TEST(Config, DnsCaptureOffByDefaultAndItsRefusals) {
    const std::string in = "inbound:\n  inner_src_mac: \"02:00:00:00:7e:01\"\n"
                           "  inner_dst_mac: \"02:00:00:00:7e:02\"\n";
    auto c = parse_config(kGood + in, "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_FALSE(c->inbound.dns_capture) << "off unless asked for";
    EXPECT_EQ(c->inbound.dns_idle_timeout_s, 5u);
    c = parse_config(kGood + in + "  dns_capture: true\n  flows: {dns_idle_timeout_s: 2}\n",
                     "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_TRUE(c->inbound.dns_capture);
    EXPECT_EQ(c->inbound.dns_idle_timeout_s, 2u);
    EXPECT_EQ(parse_config(kGood + in + "  flows: {dns_idle_timeout_s: 0}\n", "bad.yaml").error(),
              "inbound.flows.dns_idle_timeout_s: 0 is out of range 1..3600");
    // attach: xdp: the programs pass no UDP; refused, naming the key, not silently off.
    std::string y = kGood;
    const std::string zt = "{name: zt, role: ztunnel, devargs: \"net_af_packet1,iface=v1\"}";
    y.replace(y.find(zt), zt.size(), "{name: zt, role: ztunnel, attach: xdp, links: [vethzt]}");
    EXPECT_EQ(parse_config(y + in + "  dns_capture: true\n", "bad.yaml").error(),
              "inbound.dns_capture: not with attach: xdp (ports[1]): its programs pass no UDP to "
              "ztgeneve; there the kernel's DNAT rule does it (kernel.mode program, "
              "kernel.dns_capture: true)");
    EXPECT_TRUE(parse_config(y + in, "good.yaml").ok()) << "without it, xdp is fine";
    // program: the kernel fallback must capture as well.
    const std::string program = "kernel: {mode: program, ztunnel_dev: v-zt}\n";
    EXPECT_EQ(parse_config(kGood + program + in + "  dns_capture: true\n", "bad.yaml").error(),
              "inbound.dns_capture: with kernel.mode program also set kernel.dns_capture: true "
              "(else the kernel fallback would not capture DNS while the dataplane does)");
    c = parse_config(kGood + "kernel: {mode: program, ztunnel_dev: v-zt, dns_capture: true}\n" +
                         in + "  dns_capture: true\n",
                     "good.yaml");
    ASSERT_TRUE(c.ok()) << c.error();
    EXPECT_TRUE(c->kernel.dns_capture && c->inbound.dns_capture);
}

TEST(Config, MissingFileNamesTheFile) {
    auto c = load_config("/nonexistent/ztg.yaml");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error(), "/nonexistent/ztg.yaml: cannot open the file");
}

} // namespace
