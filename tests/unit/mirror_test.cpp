// The kernel mirror's pure decisions: which pods change in the dataplane, and which
// ipset commands keep ztgeneve's members in step (program) or remove them (--cleanup)
// while leaving everyone else's alone.
#include <gtest/gtest.h>

#include "control/kernel/mirror.hpp"

using namespace ztg;

namespace {

const Ip4 kA = ip4(10, 244, 2, 3), kB = ip4(10, 244, 2, 20), kC = ip4(10, 244, 3, 1),
          kD = ip4(9, 0, 0, 1);

} // namespace

TEST(PodDiff, RemovedAndAddedInAddressOrder) {
    const PodDiff d = diff_pods({kA, kB, kC}, {kD, kB, kC, ip4(10, 244, 2, 4)});
    EXPECT_EQ(d.remove, std::vector<Ip4>{kA});
    // 9.0.0.1 sorts before 10.244.2.4 by address (its network-order bytes would not).
    EXPECT_EQ(d.add, (std::vector<Ip4>{kD, ip4(10, 244, 2, 4)}));
}

TEST(PodDiff, SameSetsNoChange) {
    const PodDiff d = diff_pods({kA, kB}, {kB, kA});
    EXPECT_TRUE(d.remove.empty());
    EXPECT_TRUE(d.add.empty());
}

TEST(PodDiff, FromEmptyAndToEmpty) {
    EXPECT_EQ(diff_pods({}, {kB, kA}).add, (std::vector<Ip4>{kA, kB}));
    EXPECT_EQ(diff_pods({kB, kA}, {}).remove, (std::vector<Ip4>{kA, kB}));
}

TEST(IpsetProgram, OursFollowWantedOthersStay) {
    const std::vector<IpsetMember> members = {
        {kA, "ztgeneve"}, // ours, still wanted
        {kB, "ztgeneve"}, // ours, no longer wanted
        {kC, "cni"},      // someone else's, not wanted by us: stays
        {kD, ""},         // someone else's, wanted by us too: not re-added
    };
    EXPECT_EQ(ipset_program_commands("ztunnel-pods-ips", members, {kA, kD, ip4(10, 244, 2, 4)}),
              (std::vector<std::string>{
                  "del ztunnel-pods-ips 10.244.2.20 -exist",
                  "add ztunnel-pods-ips 10.244.2.4 comment \"ztgeneve\" -exist",
              }));
}

TEST(IpsetProgram, NothingWhenInStep) {
    EXPECT_TRUE(ipset_program_commands("s", {{kA, "ztgeneve"}, {kC, "cni"}}, {kA}).empty());
}

TEST(IpsetProgram, MissingSetGetsEveryWantedPod) {
    EXPECT_EQ(ipset_program_commands("s", {}, {kB, kA}),
              (std::vector<std::string>{"add s 10.244.2.3 comment \"ztgeneve\" -exist",
                                        "add s 10.244.2.20 comment \"ztgeneve\" -exist"}));
}

TEST(IpsetCleanup, DeletesOursAndDestroysAnEmptiedSet) {
    EXPECT_EQ(ipset_cleanup_commands("s", {{kA, "ztgeneve"}, {kB, "ztgeneve"}}),
              (std::vector<std::string>{"del s 10.244.2.3 -exist", "del s 10.244.2.20 -exist",
                                        "destroy s"}));
    EXPECT_EQ(ipset_cleanup_commands("s", {}), std::vector<std::string>{"destroy s"});
}

TEST(IpsetCleanup, KeepsTheSetWhileSomeoneElsesMemberIsInIt) {
    EXPECT_EQ(ipset_cleanup_commands("s", {{kA, "ztgeneve"}, {kC, "cni"}}),
              std::vector<std::string>{"del s 10.244.2.3 -exist"});
}
