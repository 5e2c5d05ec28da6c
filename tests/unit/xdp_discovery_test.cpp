// The pure parts of following the attach: xdp links at run time: which links should have a
// program (the listed ones there now, and where the meshed pods' routes lead: links: auto),
// and what to detach and attach to get there (control/xdp_discovery.hpp).
#include <gtest/gtest.h>

#include "control/xdp_discovery.hpp"

using namespace ztg;

namespace {

const Ip4 kA = ip4(10, 244, 2, 30), kB = ip4(10, 244, 2, 31), kC = ip4(10, 244, 2, 32);
constexpr int kAuto = 0; // the links: auto port's index

LinkWant pod(Ip4 ip) {
    return {uint32_t(kAuto), ip};
}
LinkWant of_port(uint32_t port) {
    return {port, std::nullopt};
}
std::map<XdpLinkId, uint32_t> on(std::initializer_list<XdpLinkId> ls, uint32_t port = kAuto) {
    std::map<XdpLinkId, uint32_t> out;
    for (const XdpLinkId& l : ls) out.emplace(l, port);
    return out;
}

TEST(XdpDiscovery, APodsLinkIsWhereItsRouteLeads) {
    const HostRoutes routes{{kA, 12}, {kB, 13}, {kC, 14}};
    const LinkNames names{{12, "vetha"}, {13, "vethb"}, {14, "vethc"}};
    const auto w = wanted_links({kA, kC}, routes, names, {}, kAuto);
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(w.at(XdpLinkId{"vetha", 12}), pod(kA));
    EXPECT_EQ(w.at(XdpLinkId{"vethc", 14}), pod(kC));
}

TEST(XdpDiscovery, NoRouteOrNoLinkYetLeadsNowhere) {
    // the ipset entry first: no route; the route without its link (a stale dump)
    const auto w = wanted_links({kA, kB}, {{kB, 13}}, {{12, "vetha"}}, {}, kAuto);
    EXPECT_TRUE(w.empty());
}

TEST(XdpDiscovery, AnotherPortsLinkIsLeftToIt) {
    const auto w = wanted_links({kA}, {{kA, 12}}, {{12, "vethzt"}}, {{"vethzt", 1}}, kAuto);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w.at(XdpLinkId{"vethzt", 12}), of_port(1));
}

TEST(XdpDiscovery, TwoPodsOnOneLinkAttachItOnce) {
    const auto w = wanted_links({kA, kB}, {{kA, 12}, {kB, 12}}, {{12, "vetha"}}, {}, kAuto);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w.begin()->second, pod(kA));
}

TEST(XdpDiscovery, PlanAttachesTheNewAndDetachesTheGone) {
    const auto attached = on({{"vetha", 12}, {"vethb", 13}});
    const std::map<XdpLinkId, LinkWant> wanted{{{"vethb", 13}, pod(kB)}, {{"vethc", 14}, pod(kC)}};
    const LinkPlan p = plan_links(attached, wanted);
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"vetha", 12}}));
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"vethc", 14}}));
    EXPECT_TRUE(
        plan_links(attached, {{{"vetha", 12}, pod(kA)}, {{"vethb", 13}, pod(kB)}}).attach.empty());
}

TEST(XdpDiscovery, AReusedIfindexIsAnotherLink) {
    // vetha was deleted and a new link got its ifindex: the old is detached, the new attached
    const LinkPlan p = plan_links(on({{"vetha", 12}}), {{{"vethnew", 12}, pod(kA)}});
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"vetha", 12}}));
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"vethnew", 12}}));
}

// A listed link (not links: auto) follows its name: there, it should have its port's program;
// deleted, it should not; a link of its name again (any ifindex), it should again.
TEST(XdpDiscovery, AListedLinkIsWantedWhileALinkOfItsNameIsThere) {
    const ListedLinks configured{{"veth1", 0}, {"veth2", 0}, {"vethzt", 1}};
    auto w = wanted_links({}, {}, {{12, "veth1"}, {13, "veth2"}, {20, "vethzt"}}, configured, -1);
    EXPECT_EQ(w, (std::map<XdpLinkId, LinkWant>{{{"veth1", 12}, of_port(0)},
                                                {{"veth2", 13}, of_port(0)},
                                                {{"vethzt", 20}, of_port(1)}}));
    const std::map<XdpLinkId, uint32_t> attached{
        {{"veth1", 12}, 0}, {{"veth2", 13}, 0}, {{"vethzt", 20}, 1}};
    EXPECT_TRUE(plan_links(attached, w).detach.empty());
    EXPECT_TRUE(plan_links(attached, w).attach.empty());
    // veth2 deleted: detached; re-created under a new ifindex: attached to its port again
    w = wanted_links({}, {}, {{12, "veth1"}, {20, "vethzt"}}, configured, -1);
    LinkPlan p = plan_links(attached, w);
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"veth2", 13}}));
    EXPECT_TRUE(p.attach.empty());
    w = wanted_links({}, {}, {{12, "veth1"}, {20, "vethzt"}, {31, "veth2"}}, configured, -1);
    p = plan_links({{{"veth1", 12}, 0}, {{"vethzt", 20}, 1}}, w);
    EXPECT_TRUE(p.detach.empty());
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"veth2", 31}}));
    EXPECT_EQ(w.at(XdpLinkId{"veth2", 31}), of_port(0));
}

TEST(XdpDiscovery, AListedLinksIfindexReusedByAnotherLinkIsNotItsLink) {
    // veth2 (13) deleted and a link of another name given 13: that link gets nothing
    const ListedLinks configured{{"veth2", 0}};
    const auto w = wanted_links({kA}, {{kA, 13}}, {{13, "vethother"}}, configured, -1);
    EXPECT_TRUE(w.empty()); // no links: auto port: a pod's route does not make it wanted
    const LinkPlan p = plan_links({{{"veth2", 13}, 0}}, w);
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"veth2", 13}}));
    EXPECT_TRUE(p.attach.empty());
}

TEST(XdpDiscovery, ALinkWantedByAnotherPortIsMoved) {
    const LinkPlan p = plan_links({{{"veth1", 12}, 0}}, {{{"veth1", 12}, of_port(1)}});
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"veth1", 12}}));
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"veth1", 12}}));
}

} // namespace
