// The worker: one per lcore, run to completion over bursts. It polls its rx queue of every
// device, hands each burst to the stage of that device's kind (set by the role's
// pipeline), sends what the stage queued, reports a QSBR quiescent state each round, and
// backs off when idle.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <vector>

#include <boost/lockfree/spsc_queue.hpp>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dataplane/counters.hpp"
#include "dataplane/flow_table.hpp"
#include "dataplane/pod_table.hpp"
#include "dataplane/port_kind.hpp"
#include "dataplane/rcu.hpp"
#include "dataplane/snapshot.hpp"

namespace ztg {

constexpr uint16_t kBurst = 32;

// A device's "in service" flag. Control clears it (release), waits for a QSBR grace
// period, replaces the device (a deleted tap is re-created under a new port id) and sets
// it again (release); workers read it (acquire) before they touch the port, and skip the
// device while it is clear. Copyable only so that a Topology can be built.
struct InService {
    std::atomic<bool> v{true};
    InService() = default;
    InService(const InService& o) : v(o.v.load(std::memory_order_relaxed)) {}
    InService& operator=(const InService& o) {
        v.store(o.v.load(std::memory_order_relaxed), std::memory_order_relaxed);
        return *this;
    }
    bool get() const { return v.load(std::memory_order_acquire); }
};

// One DPDK device the workers poll: a configured port or the kernel twin of one.
struct Device {
    uint16_t port_id = 0; // ethdev port; changes only while the device is out of service
    DevKind kind = DevKind::Pods;
    uint16_t peer = kNoDev; // a port's twin, or a twin's port (index into Topology::devs)
    rte_ether_addr mac{};   // the MAC this device answers to (a port: its twin's, if any)
    uint32_t vni = 0;       // a Tunnel tap: the VNI it carries
    InService in_service;
};

// Fixed for the life of the process once workers start, but for a device's port_id,
// which control may change while that device is out of service.
struct Topology {
    std::vector<Device> devs;
    uint16_t link =
        kNoDev; // the device toward the tunnel peer (node: ztunnel port; endpoint: uplink)
    // Node, attach: xdp with inbound: the uplink port's device. What is sent out of it the
    // kernel's FIB routes (its aggregation device's tc program): the way to the kernel's routes
    // for a port that has no twin.
    uint16_t xdp_uplink = kNoDev;
};

// Worker -> control notifications; the control thread logs and acts on them.
struct Event {
    enum class Kind : uint8_t {
        NextHopMac, // ARP from the tunnel peer: ip is at mac
        PodSeen,    // pod ip sent from mac on device dev
    } kind = Kind::NextHopMac;
    Ip4 ip;
    rte_ether_addr mac{};
    uint16_t dev = kNoDev;
};
using EventQueue = boost::lockfree::spsc_queue<Event, boost::lockfree::capacity<256>>;

// What control shares with every worker.
struct Shared {
    const Topology* topo = nullptr;
    std::atomic<const Snapshot*> snapshot{nullptr};
    PodTable* pods = nullptr;
    FlowTable* flows = nullptr; // inbound only: ztunnel's proxied connections
    Rcu* rcu = nullptr;
    rte_mempool* pool = nullptr;
    std::atomic<bool> stop{false};
    uint32_t idle_sleep_us = 0;
};

// What becomes of a packet a stage received: sent out of device `out`, or freed (out ==
// kNoDev); either way counted once, under `ctr`, on the device it came from. Frames a
// stage makes itself (ICMP, fragments, ARP) are counted where they are made.
struct Verdict {
    Ctr ctr;
    uint16_t out = kNoDev;
};
constexpr Verdict dropped(Ctr why) {
    return {why, kNoDev};
}

struct TxQueue {
    std::array<rte_mbuf*, 2 * kBurst> pkts{};
    uint16_t n = 0;
};

// A worker's own state; stages receive it and touch nothing else.
struct WorkerCtx {
    uint16_t id = 0; // worker index = rx/tx queue index = QSBR thread id
    Shared* shared = nullptr;
    const Snapshot* snap = nullptr;                  // valid until the next quiescent state
    std::vector<DeviceCounters>* counters = nullptr; // [device]
    EventQueue* events = nullptr;
    std::vector<TxQueue> tx;        // [device]
    std::vector<uint16_t> tx_dirty; // devices with queued packets
    uint64_t next_arp_tsc = 0;
    // PodSeen notes posted lately (a small direct-mapped cache of ip ^ location), so each
    // change is posted about once, not once per packet until control has applied it.
    std::array<uint64_t, 256> pod_seen{};
    uint64_t icmp_tokens_tsc = 0; // ICMP rate limit: when the bucket was last refilled
    uint32_t icmp_tokens = 0;
    // The node's pods stage takes its vector path (issue 14; dpdk.fast_path), else the
    // scalar one, the reference: the same verdicts and bytes. Set before the worker starts.
    bool vector_path = true;
    // Poll rounds completed: the worker adds 1 per round (relaxed load + store, single
    // writer); the health check reads it (relaxed) to see that the worker is alive. On a
    // line of its own so that its reader never shares the worker's hot fields.
    alignas(64) std::atomic<uint64_t> rounds{0};

    // Queues m for transmission out of device dev (sent at the end of the burst).
    // Inline to the store; the first packet of a burst for dev and a full queue take the
    // out-of-line path.
    [[gnu::always_inline]] void send(uint16_t dev, rte_mbuf* m) {
        TxQueue& q = tx[dev];
        if (uint16_t(q.n - 1u) < q.pkts.size() - 1u) [[likely]] // 1 <= n < size
            q.pkts[q.n++] = m;
        else
            send_slow(dev, m);
    }
    // The one place a received packet leaves its stage: sent or freed, and counted.
    [[gnu::always_inline]] void dispose(BurstTally& t, rte_mbuf* m, Verdict v) {
        t.inc(v.ctr);
        if (v.out != kNoDev)
            send(v.out, m);
        else
            rte_pktmbuf_free(m);
    }
    void send_slow(uint16_t dev, rte_mbuf* m);
    void flush(uint16_t dev);
    void flush_all();
    void post(const Event& e) {
        if (!events->push(e)) (*counters)[0].add(Ctr::events_lost, 1);
    }
    DeviceCounters& ctr(uint16_t dev) { return (*counters)[dev]; }
};

// A stage: takes a burst received on device dev and gives every packet one Verdict, which
// WorkerCtx::dispose carries out. It owns the mbufs it is given.
using Stage = void (*)(WorkerCtx& ctx, uint16_t dev, rte_mbuf** pkts, uint16_t n);
// Called once per poll round with the current snapshot, for timed work (ARP resolution).
using Tick = void (*)(WorkerCtx& ctx);

struct Pipeline {
    std::array<Stage, size_t(DevKind::count)> stage{};
    Tick tick = nullptr;
};

// Runs until shared.stop. Launched on a worker lcore by control.
void run_worker(WorkerCtx& ctx, const Pipeline& pipeline);

} // namespace ztg
