// SIGHUP's decision: pods, log.level and kernel.poll_ms change live (pods as a difference);
// any other change refuses the whole reload, naming the first key that changed.
#include <gtest/gtest.h>

#include "config/config.hpp"
#include "control/reload.hpp"
#include "tests/support/node_yaml.hpp"

using namespace ztg;

namespace {

const std::string kRunning =
    test::kNodeYaml +
    "kernel: {mode: program, ztunnel_dev: v1, poll_ms: 100}\nlog: {level: info}\n";

Config load(const std::string& yaml) {
    auto c = parse_config(yaml, "ztg.yaml");
    EXPECT_TRUE(c.ok()) << c.error();
    return c.ok() ? *c : Config{};
}

// kRunning with `from` replaced by `to`.
Config changed(const std::string& from, const std::string& to) {
    std::string y = kRunning;
    const auto at = y.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) y.replace(at, from.size(), to);
    return load(y);
}

} // namespace

TEST(Reload, SameFileChangesNothing) {
    const ReloadPlan p = plan_reload(load(kRunning), load(kRunning));
    EXPECT_EQ(p.refused, "");
    EXPECT_TRUE(p.pods.add.empty());
    EXPECT_TRUE(p.pods.remove.empty());
}

TEST(Reload, PodsAreTheDifference) {
    const ReloadPlan p =
        plan_reload(load(kRunning),
                    changed("[10.244.2.3, 10.244.2.2]", "[10.244.2.9, 10.244.2.3, 10.244.2.4]"));
    EXPECT_EQ(p.refused, "");
    EXPECT_EQ(p.pods.remove, std::vector<Ip4>{ip4(10, 244, 2, 2)});
    EXPECT_EQ(p.pods.add, (std::vector<Ip4>{ip4(10, 244, 2, 4), ip4(10, 244, 2, 9)}));
}

TEST(Reload, LogLevelAndPollIntervalChangeLive) {
    EXPECT_EQ(plan_reload(load(kRunning), changed("level: info", "level: debug")).refused, "");
    EXPECT_EQ(plan_reload(load(kRunning), changed("poll_ms: 100", "poll_ms: 500")).refused, "");
}

struct Refused {
    const char* from;
    const char* to;
    const char* key;
};

void PrintTo(const Refused& r, std::ostream* os) {
    *os << r.key;
}

class ReloadRefused : public ::testing::TestWithParam<Refused> {};

TEST_P(ReloadRefused, NamesTheKeyAndAppliesNothing) {
    const Refused& r = GetParam();
    // The pods change too: nothing of a refused reload is applied, pods included.
    Config next = changed(r.from, r.to);
    next.pods.push_back(ip4(10, 244, 2, 50));
    const ReloadPlan p = plan_reload(load(kRunning), next);
    EXPECT_EQ(p.refused, r.key);
    EXPECT_TRUE(p.pods.add.empty());
    EXPECT_TRUE(p.pods.remove.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Keys, ReloadRefused,
    ::testing::Values(
        Refused{"remote_ip: 10.244.2.10", "remote_ip: 10.244.2.11", "tunnel"},
        Refused{"  local_ip:", "  mtu: 1400\n  local_ip:", "tunnel"},
        Refused{"net_af_packet1,iface=v1", "net_af_packet1,iface=v2", "ports[1]"},
        Refused{"  - {name: zt,",
                "  - {name: pods1, role: pods, devargs: \"net_af_packet2,iface=v2\"}\n"
                "  - {name: zt,",
                "ports"},
        Refused{"pods: [", "redirect: {protocols: [tcp, udp]}\npods: [", "redirect.protocols"},
        Refused{"pods: [", "limits: {pods: 128}\npods: [", "limits.pods"},
        Refused{"pods: [",
                "inbound: {inner_src_mac: \"02:00:00:00:7e:01\", inner_dst_mac: "
                "\"02:00:00:00:7e:02\"}\npods: [",
                "inbound"},
        Refused{"ztunnel_dev: v1", "ztunnel_dev: v1, ipset: other", "kernel"},
        Refused{"role: node", "role: node\ndpdk: {memory_mb: 512}", "dpdk"}));

// Two sections change: the first in the order they are checked is named.
TEST(Reload, PortsAreNamedBeforeTheTunnel) {
    Config next = load(kRunning);
    next.tunnel.mtu = 1400;
    next.ports[1].devargs = "net_af_packet1,iface=v2";
    EXPECT_EQ(plan_reload(load(kRunning), next).refused, "ports[1]");
}

// inbound is fixed at start (the flow table's size, the istioin template): a running inbound
// section cannot change either, its timeouts included.
TEST(Reload, InboundSectionIsFixed) {
    const std::string in = "inbound: {inner_src_mac: \"02:00:00:00:7e:01\", inner_dst_mac: "
                           "\"02:00:00:00:7e:02\"";
    const Config running = load(kRunning + in + "}\n");
    EXPECT_EQ(plan_reload(running, load(kRunning + in + "}\n")).refused, "");
    EXPECT_EQ(plan_reload(running, load(kRunning + in + ", flows: {idle_timeout_s: 5}}\n")).refused,
              "inbound");
    EXPECT_EQ(plan_reload(running, load(kRunning)).refused, "inbound");
}
