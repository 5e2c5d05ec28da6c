#include "dataplane/worker.hpp"

#include <cstdio>
#include <cstdlib>

#include <rte_cycles.h>
#include <rte_ethdev.h>

namespace ztg {

void WorkerCtx::flush(uint16_t dev) {
    TxQueue& q = tx[dev];
    if (q.n == 0) return;
    const Device& d = shared->topo->devs[dev];
    const uint16_t sent =
        d.in_service.get() ? rte_eth_tx_burst(d.port_id, id, q.pkts.data(), q.n) : 0;
    DeviceCounters& c = ctr(dev);
    c.add(Ctr::tx, sent);
    if (sent < q.n) {
        c.add(Ctr::drop_tx_full, uint64_t(q.n - sent));
        rte_pktmbuf_free_bulk(q.pkts.data() + sent, q.n - sent);
    }
    q.n = 0;
}

void WorkerCtx::send_slow(uint16_t dev, rte_mbuf* m) {
    TxQueue& q = tx[dev];
    if (q.n == 0)
        tx_dirty.push_back(dev);
    else // full
        flush(dev);
    q.pkts[q.n++] = m;
}

void WorkerCtx::flush_all() {
    for (uint16_t dev : tx_dirty) flush(dev);
    tx_dirty.clear();
}

namespace {

// Test only (tests/operate): ZTG_TEST_STALL_WORKER=<id>@<ms> makes worker <id> stop polling
// <ms> after it starts, as a worker stuck in a driver would, so that the health check can be
// seen to fail. Read once at start; 0: never.
uint64_t test_stall_tsc(uint16_t id) {
    const char* e = std::getenv("ZTG_TEST_STALL_WORKER");
    unsigned who = 0, ms = 0;
    if (e == nullptr || std::sscanf(e, "%u@%u", &who, &ms) != 2 || who != id) return 0;
    return rte_rdtsc() + rte_get_tsc_hz() / 1000 * ms;
}

} // namespace

void run_worker(WorkerCtx& ctx, const Pipeline& pipeline) {
    Shared& sh = *ctx.shared;
    const auto& devs = sh.topo->devs;
    ctx.tx.assign(devs.size(), TxQueue{});
    ctx.tx_dirty.reserve(devs.size() * 2);
    sh.rcu->reader_start(ctx.id);

    // Back off only after this many empty rounds, so a busy worker never sleeps.
    constexpr uint32_t kIdleRounds = 256;
    uint32_t idle = 0;
    rte_mbuf* pkts[kBurst];
    const uint64_t stall_tsc = test_stall_tsc(ctx.id);
    while (!sh.stop.load(std::memory_order_acquire)) {
        if (stall_tsc != 0 && rte_rdtsc() > stall_tsc) [[unlikely]] {
            while (!sh.stop.load(std::memory_order_acquire)) rte_delay_us_sleep(10000);
            break;
        }
        ctx.snap = sh.snapshot.load(std::memory_order_acquire);
        uint32_t got = 0;
        for (uint16_t d = 0; d < devs.size(); d++) {
            if (!devs[d].in_service.get()) [[unlikely]]
                continue;
            const uint16_t n = rte_eth_rx_burst(devs[d].port_id, ctx.id, pkts, kBurst);
            if (n == 0) continue;
            got += n;
            ctx.ctr(d).add(Ctr::rx, n);
            pipeline.stage[size_t(devs[d].kind)](ctx, d, pkts, n);
            ctx.flush_all();
        }
        if (pipeline.tick != nullptr) {
            pipeline.tick(ctx);
            ctx.flush_all();
        }
        ctx.snap = nullptr;
        sh.rcu->quiescent(ctx.id);
        ctx.rounds.store(ctx.rounds.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (got != 0) {
            idle = 0;
        } else if (sh.idle_sleep_us != 0 && ++idle > kIdleRounds) {
            rte_delay_us_sleep(sh.idle_sleep_us);
        }
    }
    ctx.flush_all();
    sh.rcu->reader_stop(ctx.id);
}

} // namespace ztg
