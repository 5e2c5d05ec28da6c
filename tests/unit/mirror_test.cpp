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

namespace {
IpsetContent with_comments(std::vector<IpsetMember> m) {
    return {{"hash:ip", "inet", true}, std::move(m)};
}
} // namespace

TEST(IpsetCleanup, DeletesOursAndDestroysAnEmptiedSet) {
    EXPECT_EQ(ipset_cleanup_commands("s", with_comments({{kA, "ztgeneve"}, {kB, "ztgeneve"}}), {}),
              (std::vector<std::string>{"del s 10.244.2.3 -exist", "del s 10.244.2.20 -exist",
                                        "destroy s"}));
    EXPECT_EQ(ipset_cleanup_commands("s", with_comments({}), {}),
              std::vector<std::string>{"destroy s"});
}

TEST(IpsetCleanup, KeepsTheSetWhileSomeoneElsesMemberIsInIt) {
    EXPECT_EQ(ipset_cleanup_commands("s", with_comments({{kA, "ztgeneve"}, {kC, "cni"}}), {}),
              std::vector<std::string>{"del s 10.244.2.3 -exist"});
}

TEST(IpsetCleanup, ASetWithoutCommentsLosesTheConfigsPodsAndStays) {
    const IpsetContent set{{"hash:ip", "inet", false}, {{kA, ""}, {kC, ""}}};
    EXPECT_EQ(ipset_cleanup_commands("s", set, {kA, kB}),
              std::vector<std::string>{"del s 10.244.2.3 -exist"});
}

// The bug of issue 13: `ipset create NAME hash:ip` (no comment support) made by someone
// else. Adopted: ztgeneve's pods go in without comment; only pods it had go out.
TEST(IpsetProgram, ASetWithoutCommentsIsFilledWithoutComments) {
    EXPECT_EQ(ipset_program_commands("s", {{kC, ""}}, {kA, kC}, false, {}),
              (std::vector<std::string>{"add s 10.244.2.3 -exist"}))
        << "a foreign member we also want is not re-added";
    // Later: kA no longer wanted (we had it), kC never ours, kB new.
    EXPECT_EQ(ipset_program_commands("s", {{kA, ""}, {kC, ""}}, {kB}, false, {kA}),
              (std::vector<std::string>{"del s 10.244.2.3 -exist", "add s 10.244.2.20 -exist"}));
}

TEST(IpsetAdopt, HashIpInetWithOrWithoutComments) {
    EXPECT_TRUE(ipset_adoptable("s", {"hash:ip", "inet", true}).ok());
    EXPECT_TRUE(ipset_adoptable("s", {"hash:ip", "inet", false}).ok());
}

TEST(IpsetAdopt, AnotherTypeOrFamilyIsRefusedNamingTheSet) {
    const Status net = ipset_adoptable("ztunnel-pods-ips", {"hash:net", "inet", false});
    ASSERT_FALSE(net.ok());
    EXPECT_EQ(net.error(), "ipset ztunnel-pods-ips exists as hash:net family inet, not hash:ip "
                           "family inet: ztgeneve cannot keep its pods in it (the kernel rule "
                           "matches the pods' source addresses); destroy it or set kernel.ipset "
                           "to another name");
    EXPECT_FALSE(ipset_adoptable("s", {"hash:ip", "inet6", true}).ok());
}

TEST(IpsetSave, HeaderAndMembers) {
    const IpsetContent c = parse_ipset_save(
        "s", "create s hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12 "
             "initval 0x4f80622e\nadd s 10.244.2.3 comment \"ztgeneve\"\nadd s 10.244.2.20\n"
             "create t hash:net family inet6\nadd t 10.0.0.0/8\n");
    EXPECT_EQ(c.header.type, "hash:ip");
    EXPECT_EQ(c.header.family, "inet");
    EXPECT_TRUE(c.header.comment);
    ASSERT_EQ(c.members.size(), 2u);
    EXPECT_EQ(c.members[0].ip, kA);
    EXPECT_EQ(c.members[0].comment, "ztgeneve");
    EXPECT_EQ(c.members[1].comment, "");
    EXPECT_FALSE(
        parse_ipset_save("s", "create s hash:ip family inet hashsize 1024\n").header.comment);
}
