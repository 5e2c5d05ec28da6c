// The pod table: membership and locations under churn, rebuilds, and concurrent readers
// that must never see a stable pod vanish or a foreign address appear.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "dataplane/pod_table.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

Ip4 addr(uint32_t i) {
    return Ip4::from_host(0x0a000000u + i + 1);
}

TEST(PodTable, AddDelContainsAndSize) {
    eal_once();
    Rcu rcu(1);
    PodTable t("pt_basic", 100, rcu);
    ASSERT_TRUE(t.ok());
    EXPECT_FALSE(t.add(Ip4{0})) << "0.0.0.0 is reserved";
    EXPECT_FALSE(t.add(Ip4{0xFFFFFFFF})) << "255.255.255.255 is reserved";
    for (uint32_t i = 0; i < 100; i++) ASSERT_TRUE(t.add(addr(i)));
    EXPECT_TRUE(t.add(addr(5))) << "adding a present pod is a no-op";
    EXPECT_EQ(t.size(), 100u);
    EXPECT_FALSE(t.add(addr(100))) << "capacity is a hard limit";
    for (uint32_t i = 0; i < 100; i += 2) ASSERT_TRUE(t.del(addr(i)));
    EXPECT_FALSE(t.del(addr(0)));
    EXPECT_EQ(t.size(), 50u);
    for (uint32_t i = 0; i < 100; i++) EXPECT_EQ(t.contains(addr(i)), i % 2 == 1) << i;
}

TEST(PodTable, BulkLookupAndTags) {
    eal_once();
    Rcu rcu(1);
    PodTable t("pt_bulk", 64, rcu);
    const rte_ether_addr mac = {{2, 0, 0, 0, 2, 3}};
    Ip4 keys[40];
    for (uint32_t i = 0; i < 40; i++) keys[i] = addr(i);
    for (uint32_t i = 0; i < 40; i += 3) ASSERT_TRUE(t.add(keys[i]));
    ASSERT_TRUE(t.set_location(keys[3], PodLocation::of(7, mac)));
    EXPECT_FALSE(t.set_location(keys[1], PodLocation::of(7, mac))) << "not a pod";
    uint32_t tags[40] = {};
    const uint64_t hits = t.lookup_bulk(keys, 40, tags);
    for (uint32_t i = 0; i < 40; i++) EXPECT_EQ((hits >> i) & 1, i % 3 == 0 ? 1u : 0u) << i;
    EXPECT_EQ(tags[0], 0u) << "not seen yet";
    EXPECT_EQ(tags[3], PodLocation::of(7, mac).tag());
    EXPECT_NE(tags[3], PodLocation::of(7, {{2, 0, 0, 0, 2, 4}}).tag())
        << "a new MAC changes the tag";
    EXPECT_NE(tags[3], PodLocation::of(6, mac).tag()) << "a new device changes the tag";
    EXPECT_EQ(t.location(keys[3]), PodLocation::of(7, mac));
    EXPECT_FALSE(t.location(keys[1]).known());
}

TEST(PodTable, ChurnBeyondTheTombstoneLimitRebuilds) {
    eal_once();
    Rcu rcu(1);
    PodTable t("pt_churn", 1000, rcu);
    std::set<uint32_t> live;
    std::mt19937 rng(7);
    for (uint32_t round = 0; round < 20000; round++) {
        const uint32_t i = uint32_t(rng() % 5000);
        if (live.count(i)) {
            ASSERT_TRUE(t.del(addr(i)));
            live.erase(i);
        } else if (live.size() < 1000) {
            ASSERT_TRUE(t.add(addr(i))) << "round " << round;
            live.insert(i);
        }
    }
    EXPECT_GT(t.rebuilds(), 0u) << "churn should have forced at least one rebuild";
    EXPECT_EQ(t.size(), live.size());
    for (uint32_t i = 0; i < 5000; i++) EXPECT_EQ(t.contains(addr(i)), live.count(i) == 1) << i;
}

// A worker-like reader looks up, without pause, pods that stay and addresses that never
// become pods, while the writer adds and removes 10,000 others, reclaims and rebuilds.
TEST(PodTable, ConcurrentReaderSeesOldOrNewNeverGarbage) {
    eal_once();
    Rcu rcu(1);
    PodTable t("pt_conc", 20000, rcu);
    constexpr uint32_t kStable = 32;
    for (uint32_t i = 0; i < kStable; i++) ASSERT_TRUE(t.add(addr(i)));
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> misses{0}, false_hits{0}, rounds{0};
    std::thread reader([&] {
        rcu.reader_start(0);
        Ip4 stable[kStable], never[kStable];
        for (uint32_t i = 0; i < kStable; i++) {
            stable[i] = addr(i);
            never[i] = addr(1000000 + i);
        }
        while (!stop.load(std::memory_order_acquire)) {
            if (t.lookup_bulk(stable, kStable) != (uint64_t(1) << kStable) - 1) misses++;
            if (t.lookup_bulk(never, kStable) != 0) false_hits++;
            rounds++;
            rcu.quiescent(0);
        }
        rcu.reader_stop(0);
    });
    // Churn while the reader runs: at least 3 cycles and until it has done 10,000 rounds
    // (bounded: at most 2,000 cycles).
    uint64_t during = 0;
    for (int cycle = 0; cycle < 2000 && (cycle < 3 || during < 10000); cycle++) {
        const uint64_t r0 = rounds.load();
        for (uint32_t i = 0; i < 10000; i++) ASSERT_TRUE(t.add(addr(100 + i)));
        for (uint32_t i = 0; i < 10000; i++) ASSERT_TRUE(t.del(addr(100 + i)));
        t.reclaim();
        if (r0 != 0) during += rounds.load() - r0;
    }
    stop.store(true, std::memory_order_release);
    reader.join();
    EXPECT_GE(during, 10000u) << "the reader must have run while the writer churned";
    EXPECT_EQ(misses.load(), 0u);
    EXPECT_EQ(false_hits.load(), 0u);
    EXPECT_EQ(t.size(), kStable);
}

} // namespace
