// The reference node configuration as program mode writes it and observe reads it: the
// iptables rules, ip rules and routes as text (Istio's, with this config's addresses and
// names), the route plan that keeps tables 100-102 in step with the pods, and observe's
// present / missing / different.
#include <gtest/gtest.h>

#include "config/config.hpp"
#include "control/kernel/reference.hpp"
#include "tests/support/node_yaml.hpp"

using namespace ztg;

namespace {

Config lab(const std::string& kernel_extra = "") {
    auto c = parse_config(test::kNodeYaml + "kernel: {mode: program, ztunnel_dev: v-zt" +
                              kernel_extra + "}\n",
                          "t.yaml");
    EXPECT_TRUE(c.ok()) << c.error();
    return *c;
}

std::vector<std::string> saved(const Config& c, const std::string& table, bool all = false) {
    std::vector<std::string> out;
    for (const IptRule& r : reference_iptables(c, all))
        if (r.table == table) out.push_back(iptables_saved_form(r, false));
    return out;
}

const Ip4 kPod3 = ip4(10, 244, 2, 3), kPod2 = ip4(10, 244, 2, 2), kPod7 = ip4(10, 244, 2, 7);

} // namespace

TEST(Reference, MangleIsTheReferenceInOrder) {
    EXPECT_EQ(saved(lab(), "mangle"),
              (std::vector<std::string>{
                  "-A PREROUTING -j ztunnel-PREROUTING",
                  "-A FORWARD -j ztunnel-FORWARD",
                  "-A INPUT -j ztunnel-INPUT",
                  "-A OUTPUT -j ztunnel-OUTPUT",
                  "-A ztunnel-PREROUTING -i istioin -j MARK --set-xmark 0x200/0x200",
                  "-A ztunnel-PREROUTING -i istioin -j RETURN",
                  "-A ztunnel-PREROUTING -i istioout -j MARK --set-xmark 0x200/0x200",
                  "-A ztunnel-PREROUTING -i istioout -j RETURN",
                  "-A ztunnel-PREROUTING -p udp -m udp --dport 6081 -j RETURN",
                  "-A ztunnel-PREROUTING -m connmark --mark 0x220/0x220 -j MARK --set-xmark "
                  "0x200/0x200",
                  "-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
                  "-A ztunnel-PREROUTING ! -i v-zt -m connmark --mark 0x210/0x210 -j MARK "
                  "--set-xmark 0x40/0x40",
                  "-A ztunnel-PREROUTING -m mark --mark 0x40/0x40 -j RETURN",
                  "-A ztunnel-PREROUTING ! -s 10.244.2.10/32 -i v-zt -j MARK --set-xmark "
                  "0x210/0x210",
                  "-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
                  "-A ztunnel-PREROUTING -i v-zt -j MARK --set-xmark 0x220/0x220",
                  "-A ztunnel-PREROUTING -p udp -j MARK --set-xmark 0x220/0x220",
                  "-A ztunnel-PREROUTING -m mark --mark 0x200/0x200 -j RETURN",
                  "-A ztunnel-PREROUTING -p tcp -m set --match-set ztunnel-pods-ips src -j MARK "
                  "--set-xmark 0x100/0x100",
                  "-A ztunnel-FORWARD -m mark --mark 0x220/0x220 -j CONNMARK --save-mark "
                  "--nfmask 0x220 --ctmask 0x220",
                  "-A ztunnel-FORWARD -m mark --mark 0x210/0x210 -j CONNMARK --save-mark "
                  "--nfmask 0x210 --ctmask 0x210",
                  "-A ztunnel-INPUT -m mark --mark 0x220/0x220 -j CONNMARK --save-mark --nfmask "
                  "0x220 --ctmask 0x220",
                  "-A ztunnel-INPUT -m mark --mark 0x210/0x210 -j CONNMARK --save-mark --nfmask "
                  "0x210 --ctmask 0x210",
                  "-A ztunnel-OUTPUT -s 10.244.2.1/32 -j MARK --set-xmark 0x220/0xffffffff",
              }));
}

TEST(Reference, NatAcceptsTheMarkAndCapturesDnsOnlyWhenAsked) {
    const std::vector<std::string> nat = {
        "-A PREROUTING -j ztunnel-PREROUTING",
        "-A POSTROUTING -j ztunnel-POSTROUTING",
        "-A ztunnel-PREROUTING -m mark --mark 0x100/0x100 -j ACCEPT",
        "-A ztunnel-POSTROUTING -m mark --mark 0x100/0x100 -j ACCEPT",
    };
    EXPECT_EQ(saved(lab(), "nat"), nat) << "DNS capture is off by default";
    auto dns = nat;
    dns.push_back("-A ztunnel-PREROUTING -p udp -m set --match-set ztunnel-pods-ips src -m udp "
                  "--dport 53 -j DNAT --to-destination 10.244.2.10:15053");
    EXPECT_EQ(saved(lab(", dns_capture: true"), "nat"), dns);
    EXPECT_EQ(saved(lab(), "nat", true), dns) << "--cleanup removes it whatever the config says";
}

TEST(Reference, NamesAndPortComeFromTheConfig) {
    const Config c = lab(", istioin: in0, istioout: out0, ipset: p");
    const auto m = saved(c, "mangle");
    EXPECT_EQ(m[4], "-A ztunnel-PREROUTING -i in0 -j MARK --set-xmark 0x200/0x200");
    EXPECT_EQ(m[6], "-A ztunnel-PREROUTING -i out0 -j MARK --set-xmark 0x200/0x200");
    EXPECT_EQ(
        m[18],
        "-A ztunnel-PREROUTING -p tcp -m set --match-set p src -j MARK --set-xmark 0x100/0x100");
}

TEST(Reference, RulesAsIpRulePrintsThem) {
    std::vector<std::string> text;
    for (const RuleSpec& r : reference_rules()) text.push_back(rule_text(r));
    EXPECT_EQ(text, (std::vector<std::string>{"100: from all fwmark 0x200/0x200 goto 32766",
                                              "101: from all fwmark 0x100/0x100 lookup 101",
                                              "102: from all fwmark 0x40/0x40 lookup 102",
                                              "103: from all lookup 100"}));
}

TEST(Reference, RoutesOfTheThreeTables) {
    std::vector<std::string> text;
    for (const RouteSpec& r : reference_routes(lab(), {kPod3, kPod2}))
        text.push_back(route_text(r));
    EXPECT_EQ(text, (std::vector<std::string>{
                        "table 100 10.244.2.10 dev v-zt scope link",
                        "table 100 10.244.2.2 via 192.168.126.2 dev istioin src 10.244.2.1",
                        "table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.1",
                        "table 101 10.244.2.10 dev v-zt scope link",
                        "table 101 default via 192.168.127.2 dev istioout",
                        "table 102 10.244.2.10 dev v-zt scope link",
                        "table 102 default via 10.244.2.10 dev v-zt onlink",
                    }));
}

TEST(Reference, LinksIstioinAndIstioout) {
    const auto links = reference_links(lab());
    ASSERT_EQ(links.size(), 2u);
    EXPECT_EQ(links[0].name, "istioin");
    EXPECT_EQ(links[0].vni, 1000u);
    EXPECT_EQ(links[0].address, ip4(192, 168, 126, 1));
    EXPECT_EQ(links[1].name, "istioout");
    EXPECT_EQ(links[1].vni, 1001u);
    EXPECT_EQ(links[1].address, ip4(192, 168, 127, 1));
    for (const auto& l : links) {
        EXPECT_EQ(l.remote, ip4(10, 244, 2, 10));
        EXPECT_EQ(l.prefix, 30);
        EXPECT_EQ(l.mtu, 1450);
    }
}

namespace {

std::vector<Rtnl::Route> ours(const std::vector<RouteSpec>& routes) {
    std::vector<Rtnl::Route> out;
    for (const auto& r : routes) out.push_back({r, true});
    return out;
}
std::vector<std::string> texts(const std::vector<RouteSpec>& routes) {
    std::vector<std::string> out;
    for (const auto& r : routes) out.push_back(route_text(r));
    return out;
}

} // namespace

TEST(RoutePlan, NothingWhenInStep) {
    const auto want = reference_routes(lab(), {kPod3, kPod2});
    const RoutePlan p = plan_routes(ours(want), want);
    EXPECT_TRUE(p.add.empty() && p.remove.empty() && p.conflicts.empty());
}

TEST(RoutePlan, Table100FollowsThePods) {
    const Config c = lab();
    const RoutePlan p =
        plan_routes(ours(reference_routes(c, {kPod3, kPod2})), reference_routes(c, {kPod3, kPod7}));
    EXPECT_EQ(texts(p.remove),
              std::vector<std::string>{
                  "table 100 10.244.2.2 via 192.168.126.2 dev istioin src 10.244.2.1"});
    EXPECT_EQ(texts(p.add),
              std::vector<std::string>{
                  "table 100 10.244.2.7 via 192.168.126.2 dev istioin src 10.244.2.1"});
}

TEST(RoutePlan, OursGoingAnotherWayIsReplacedForeignIsLeftAndReported) {
    const Config c = lab();
    auto want = reference_routes(c, {kPod3});
    std::vector<Rtnl::Route> have = ours(want);
    have[1].spec.src = ip4(10, 244, 2, 99); // our pod route, with another source
    have[2].ours = false;                   // table 101's ZT_IP route is someone else's
    have[2].spec.dev = "eth9";
    have.push_back({{kTableInbound, ip4(10, 9, 9, 9), 32, Ip4{}, "eth9", Ip4{}, false}, false});
    const RoutePlan p = plan_routes(have, want);
    EXPECT_EQ(texts(p.remove),
              std::vector<std::string>{
                  "table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.99"});
    EXPECT_EQ(texts(p.add),
              std::vector<std::string>{
                  "table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.1"});
    ASSERT_EQ(p.conflicts.size(), 1u);
    EXPECT_EQ(p.conflicts[0],
              "table 101 10.244.2.10 dev v-zt scope link: the table already has table "
              "101 10.244.2.10 dev eth9 scope link (not ztgeneve's); left alone");
}

namespace {

KernelListing everything(const Config& c, const Ip4Set& pods) {
    KernelListing l;
    l.rules = reference_rules();
    l.routes = reference_routes(c, pods);
    for (const IptRule& r : reference_iptables(c)) {
        IptTable& t = l.iptables[r.table];
        t.chains.insert(r.chain);
        const std::string line = iptables_saved_form(r, r.table == "nat"); // either form counts
        t.lines.insert(line);
        t.rules[r.chain].push_back(line);
    }
    for (const GeneveSpec& g : reference_links(c))
        l.links[g.name] = {"geneve", g.vni, g.remote, g.port};
    return l;
}

} // namespace

TEST(Observe, AllPresent) {
    const Config c = lab();
    const Findings f = compare_with_reference(c, {kPod3}, everything(c, {kPod3}));
    EXPECT_TRUE(f.missing.empty()) << f.missing[0];
    EXPECT_TRUE(f.different.empty()) << f.different[0];
    // 4 rules, 6 routes, 6 jumps, 6 chains, 2 links
    EXPECT_EQ(f.present.size(), 24u);
}

TEST(Observe, AnEmptyKernelMissesEverything) {
    const Config c = lab();
    const Findings f = compare_with_reference(c, {kPod3}, KernelListing{});
    EXPECT_TRUE(f.present.empty());
    EXPECT_EQ(f.missing.size(), 24u);
    EXPECT_EQ(f.missing[0], "ip rule 100: from all fwmark 0x200/0x200 goto 32766");
}

TEST(Observe, DifferentSaysWhatIsThere) {
    const Config c = lab();
    KernelListing l = everything(c, {kPod3});
    l.rules[1].table = 200;
    l.links["istioin"].vni = 7;
    auto& chain = l.iptables["mangle"].rules["ztunnel-PREROUTING"];
    std::swap(chain[0], chain[1]);
    l.routes.erase(l.routes.begin() + 1); // pod 10.244.2.3's route
    const Findings f = compare_with_reference(c, {kPod3}, l);
    EXPECT_EQ(f.missing,
              std::vector<std::string>{
                  "route table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.1"});
    ASSERT_EQ(f.different.size(), 3u);
    EXPECT_EQ(f.different[0], "ip rule 101: from all fwmark 0x100/0x100 lookup 101: the kernel has "
                              "101: from all fwmark 0x100/0x100 lookup 200");
    EXPECT_EQ(f.different[1],
              "iptables -t mangle chain ztunnel-PREROUTING: rule 1 is `-A ztunnel-PREROUTING -i "
              "istioin -j RETURN`, the reference's `-A ztunnel-PREROUTING -i istioin -j MARK "
              "--set-xmark 0x200/0x200`");
    EXPECT_EQ(f.different[2], "link istioin (geneve id 1000 remote 10.244.2.10 dstport 6081): the "
                              "kernel's has id 7 remote 10.244.2.10 dstport 6081");
}
