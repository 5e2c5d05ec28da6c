// The proxied-connection table: learn, find from both sides, FIN/RST, idle expiry, the
// size limit, and concurrent inserting workers with readers that never see a foreign key.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "dataplane/flow_table.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

FlowKey key(uint32_t i) {
    return {Ip4::from_host(0xc0a80000u + (i >> 8)), Ip4::from_host(0x0af40200u + (i & 0xff)),
            Be16::from_host(uint16_t(1024 + i)), Be16::from_host(8080)};
}

TEST(FlowTable, LearnFindAndCounts) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_basic", 100, rcu);
    ASSERT_TRUE(t.ok());
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(t.learn(key(1), 10, true, false), FlowTable::Learn::Inserted);
    EXPECT_EQ(t.learn(key(1), 11, false, false), FlowTable::Learn::Hit);
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.touch(key(1), 12, false), FlowKind::Proxied);
    EXPECT_EQ(t.touch(key(2), 12, false), FlowKind::None);
    EXPECT_EQ(t.learn(key(5), 12, true, false, FlowKind::Host), FlowTable::Learn::Inserted);
    EXPECT_EQ(t.touch(key(5), 13, true), FlowKind::Host) << "the kind survives a state change";
    EXPECT_EQ(t.touch(key(5), 14, false), FlowKind::Host);
    FlowKey other_port = key(1);
    other_port.pport = Be16::from_host(8081);
    EXPECT_FALSE(t.contains(other_port)) << "the ports are part of the key";
    FlowKey swapped = key(1);
    std::swap(swapped.client, swapped.pod);
    EXPECT_FALSE(t.contains(swapped)) << "client and pod are not interchangeable";
    EXPECT_GE(t.memory_bytes(), size_t(t.capacity()) * 40);
}

TEST(FlowTable, IdleExpiryAndClosing) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_expire", 100, rcu);
    t.learn(key(1), 100, true, false);
    t.learn(key(2), 100, true, false);
    t.learn(key(3), 100, true, false);
    EXPECT_EQ(t.touch(key(2), 150, false), FlowKind::Proxied) << "refreshed at 150";
    EXPECT_EQ(t.touch(key(3), 150, true), FlowKind::Proxied) << "FIN/RST: closing";
    EXPECT_EQ(t.expire(159, 60, 5), 1u) << "key 1 idle 59 ticks: stays; key 3 closing 9: goes";
    EXPECT_FALSE(t.contains(key(3)));
    EXPECT_EQ(t.expire(160, 60, 5), 1u) << "key 1 idle 60";
    EXPECT_FALSE(t.contains(key(1)));
    EXPECT_TRUE(t.contains(key(2)));
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.expired(), 2u);
}

TEST(FlowTable, TicksWrap) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_wrap", 100, rcu);
    // An entry seen just before the wrap is 3 ticks old just after.
    t.learn(key(4), FlowTable::kTickMask - 1, true, false);
    EXPECT_EQ(t.expire(1, 5, 5), 0u);
    EXPECT_TRUE(t.contains(key(4)));
    EXPECT_EQ(t.expire(3, 5, 5), 1u);
}

TEST(FlowTable, TickNewerThanTheSweepsIsNotIdle) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_ahead", 100, rcu);
    // The sweep reads `now`, then a worker stamps the next tick while it runs: an entry one
    // tick ahead of `now` was just seen, not idle for the whole wrap (2^27 - 1 ticks).
    t.learn(key(5), 101, true, false);
    t.learn(key(6), 101, true, false);
    EXPECT_EQ(t.touch(key(6), 101, true), FlowKind::Proxied) << "closing";
    EXPECT_EQ(t.expire(100, 60, 5), 0u);
    EXPECT_TRUE(t.contains(key(5)));
    EXPECT_TRUE(t.contains(key(6)));
    EXPECT_EQ(t.expire(106, 60, 5), 1u) << "the closing one, 5 ticks after its FIN";
    EXPECT_EQ(t.expired(), 1u);
}

TEST(FlowTable, SynRevivesClosingTuple) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_revive", 100, rcu);
    t.learn(key(1), 10, true, false);
    t.learn(key(1), 10, false, true); // FIN
    t.learn(key(1), 11, true, false); // a new SYN on the same tuple
    EXPECT_EQ(t.expire(30, 1000, 5), 0u) << "live again: only the idle timeout applies";
    EXPECT_TRUE(t.contains(key(1)));
}

TEST(FlowTable, SizeLimitIsExactAndFreedByExpiry) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_full", 1000, rcu);
    uint32_t inserted = 0, full = 0;
    for (uint32_t i = 0; i < 1200; i++) {
        const auto r = t.learn(key(i), 1, true, false);
        inserted += r == FlowTable::Learn::Inserted;
        full += r == FlowTable::Learn::Full;
    }
    EXPECT_EQ(inserted + full, 1200u);
    EXPECT_EQ(t.size(), inserted);
    EXPECT_LE(inserted, 1000u);
    EXPECT_GE(inserted, 990u) << "a full bucket before capacity is rare";
    EXPECT_EQ(t.expire(1000, 10, 10), inserted);
    EXPECT_EQ(t.size(), 0u) << "no growth: every slot is free again";
    for (uint32_t i = 0; i < 1000; i += 10)
        EXPECT_EQ(t.learn(key(i), 1000, true, false), FlowTable::Learn::Inserted);
}

TEST(FlowTable, DnsEntriesHoldTheirDestinationAndAreNoConnections) {
    eal_once();
    Rcu rcu(1);
    FlowTable t("ft_dns", 100, rcu);
    const Ip4 zt = Ip4::from_host(0x0af4020a), pod = Ip4::from_host(0x0af40203);
    const Ip4 vip = Ip4::from_host(0x0a60000a), other = Ip4::from_host(0x0a600035);
    const FlowKey k = dns_key(zt, pod, Be16::from_host(41000));
    EXPECT_EQ(t.dns_learn(k, 10, vip), FlowTable::Learn::Inserted);
    Ip4 asked;
    ASSERT_TRUE(t.dns_lookup(k, 11, asked));
    EXPECT_EQ(asked, vip);
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.connections(), 0u);
    EXPECT_FALSE(t.contains(k)) << "no connection lookup finds a DNS entry";
    EXPECT_EQ(t.touch(k, 12, true), FlowKind::None);
    EXPECT_EQ(t.learn(k, 12, true, false), FlowTable::Learn::Inserted)
        << "a connection of the same tuple is an entry of its own";
    EXPECT_EQ(t.connections(), 1u);
    EXPECT_EQ(t.dns_learn(k, 13, other), FlowTable::Learn::Hit);
    ASSERT_TRUE(t.dns_lookup(k, 13, asked));
    EXPECT_EQ(asked, other) << "the last query's destination";
    EXPECT_FALSE(t.dns_lookup(dns_key(zt, pod, Be16::from_host(41001)), 13, asked));
    EXPECT_EQ(t.expire(20, 1000, 1000, 7), 1u) << "the DNS entry, idle 7 ticks";
    EXPECT_FALSE(t.contains_dns(k));
    EXPECT_TRUE(t.contains(k));
    EXPECT_EQ(t.connections(), 1u);
    EXPECT_EQ(t.expire(2000, 1000, 1000, 7), 1u);
    EXPECT_EQ(t.connections(), 0u);
    EXPECT_TRUE(t.empty());
    // Reused slots carry the new entry's destination.
    EXPECT_EQ(t.dns_learn(k, 3000, other), FlowTable::Learn::Inserted);
    ASSERT_TRUE(t.dns_lookup(k, 3000, asked));
    EXPECT_EQ(asked, other);
    EXPECT_GE(t.memory_bytes(), size_t(t.capacity()) * 40) << "20 bytes a slot, two a flow";
}

TEST(FlowTable, ConcurrentInsertersAndReaders) {
    eal_once();
    constexpr uint32_t kPerWriter = 20000;
    Rcu rcu(4);
    FlowTable t("ft_mt", 4 * kPerWriter, rcu);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> foreign{0};
    std::vector<std::thread> th;
    for (uint32_t w = 0; w < 2; w++)
        th.emplace_back([&, w] {
            for (uint32_t i = 0; i < kPerWriter; i++)
                ASSERT_EQ(t.learn(key(w * kPerWriter + i), 1, true, false),
                          FlowTable::Learn::Inserted);
        });
    // Readers look up keys that are never inserted (with the same addresses as inserted
    // ones): a hit would be a torn read.
    for (uint32_t r = 2; r < 4; r++)
        th.emplace_back([&, r] {
            rcu.reader_start(r);
            while (!stop.load(std::memory_order_relaxed)) {
                for (uint32_t i = 0; i < 2 * kPerWriter; i += 7) {
                    FlowKey k = key(i);
                    k.pport = Be16::from_host(9090);
                    foreign += t.contains(k);
                }
                rcu.quiescent(r);
            }
            rcu.reader_stop(r);
        });
    th[0].join();
    th[1].join();
    stop = true;
    th[2].join();
    th[3].join();
    EXPECT_EQ(foreign.load(), 0u);
    EXPECT_EQ(t.size(), 2 * kPerWriter);
    for (uint32_t i = 0; i < 2 * kPerWriter; i++) ASSERT_TRUE(t.contains(key(i))) << i;
}

} // namespace
