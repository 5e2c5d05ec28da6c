// links: auto's pure parts: which links the meshed pods' routes lead to, and what to detach
// and attach to get there (control/xdp_discovery.hpp).
#include <gtest/gtest.h>

#include "control/xdp_discovery.hpp"

using namespace ztg;

namespace {

const Ip4 kA = ip4(10, 244, 2, 30), kB = ip4(10, 244, 2, 31), kC = ip4(10, 244, 2, 32);

TEST(XdpDiscovery, APodsLinkIsWhereItsRouteLeads) {
    const HostRoutes routes{{kA, 12}, {kB, 13}, {kC, 14}};
    const LinkNames names{{12, "vetha"}, {13, "vethb"}, {14, "vethc"}};
    const auto w = wanted_links({kA, kC}, routes, names, {});
    ASSERT_EQ(w.size(), 2u);
    EXPECT_EQ(w.at(XdpLinkId{"vetha", 12}), kA);
    EXPECT_EQ(w.at(XdpLinkId{"vethc", 14}), kC);
}

TEST(XdpDiscovery, NoRouteOrNoLinkYetLeadsNowhere) {
    // the ipset entry first: no route; the route without its link (a stale dump)
    const auto w = wanted_links({kA, kB}, {{kB, 13}}, {{12, "vetha"}}, {});
    EXPECT_TRUE(w.empty());
}

TEST(XdpDiscovery, AnotherPortsLinkIsLeftToIt) {
    const auto w = wanted_links({kA}, {{kA, 12}}, {{12, "vethzt"}}, {"vethzt"});
    EXPECT_TRUE(w.empty());
}

TEST(XdpDiscovery, TwoPodsOnOneLinkAttachItOnce) {
    const auto w = wanted_links({kA, kB}, {{kA, 12}, {kB, 12}}, {{12, "vetha"}}, {});
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w.begin()->second, kA);
}

TEST(XdpDiscovery, PlanAttachesTheNewAndDetachesTheGone) {
    const std::vector<XdpLinkId> attached{{"vetha", 12}, {"vethb", 13}};
    const std::map<XdpLinkId, Ip4> wanted{{{"vethb", 13}, kB}, {{"vethc", 14}, kC}};
    const LinkPlan p = plan_links(attached, wanted);
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"vetha", 12}}));
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"vethc", 14}}));
    EXPECT_TRUE(plan_links(attached, {{{"vetha", 12}, kA}, {{"vethb", 13}, kB}}).attach.empty());
}

TEST(XdpDiscovery, AReusedIfindexIsAnotherLink) {
    // vetha was deleted and a new link got its ifindex: the old is detached, the new attached
    const LinkPlan p = plan_links({{"vetha", 12}}, {{{"vethnew", 12}, kA}});
    EXPECT_EQ(p.detach, (std::vector<XdpLinkId>{{"vetha", 12}}));
    EXPECT_EQ(p.attach, (std::vector<XdpLinkId>{{"vethnew", 12}}));
}

} // namespace
