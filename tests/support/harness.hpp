// A dataplane without ports, for unit tests and benchmarks: EAL in memory (no hugepages,
// no PCI, a private file prefix), one mempool, a pod table, a snapshot and a WorkerCtx
// whose stages queue into ctx.tx[] where the caller can look at what they sent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <rte_mbuf.h>

#include "config/config.hpp"
#include "dataplane/worker.hpp"

namespace ztg::test {

// Initialises EAL once per process; aborts the test binary if it cannot.
void eal_once();

struct Harness {
    // Devices: 0 = pods port, 1 = its twin, 2 = ztunnel port, 3 = ztunnel twin.
    static constexpr uint16_t kPods = 0, kPodsTwin = 1, kZt = 2, kZtTwin = 3;

    explicit Harness(uint32_t pod_capacity = 1024, bool pods_twin = true);
    ~Harness();

    rte_mbuf* frame(const std::vector<uint8_t>& bytes); // an mbuf holding bytes
    void run_pods(std::vector<rte_mbuf*> pkts);         // node_from_pods over a burst
    std::vector<rte_mbuf*> take(uint16_t dev);          // what the stage sent to dev
    uint64_t counter(uint16_t dev, Ctr c) const { return counters[dev].get(c); }
    void set_snapshot(const Snapshot& s);

    rte_mempool* pool = nullptr;
    std::unique_ptr<Rcu> rcu;
    std::unique_ptr<PodTable> pods;
    Topology topo;
    Shared shared;
    Snapshot snap;
    std::vector<DeviceCounters> counters;
    EventQueue events;
    WorkerCtx ctx;
};

// The lab's node: tunnel 10.244.2.1 -> 10.244.2.10, VNI 1001, next hop 02:00:00:00:02:0a
// configured (no ARP), istioout 02:00:00:00:7f:01, pistioout 02:00:00:00:7f:02.
Config lab_config();
// build_snapshot of lab_config() over Harness's devices, the ztunnel port's MAC being
// 02:00:00:00:01:0a.
Snapshot lab_snapshot();

// Frame builders (network byte order inside): Ethernet [+ VLAN] + IPv4 + TCP/UDP.
struct FrameSpec {
    uint32_t src = 0x0af40203, dst = 0x0a60000a; // 10.244.2.3 -> 10.96.0.10
    uint8_t proto = 6;
    uint16_t sport = 40000, dport = 9080;
    uint8_t tos = 0, ttl = 64;
    uint16_t payload = 0;
    int vlan = -1;          // VLAN ID, or -1 for none
    uint16_t frag = 0x4000; // DF
};
std::vector<uint8_t> make_frame(const FrameSpec& f);

// Geneve from ztunnel to the node (the return path's frames): outer Ethernet/IPv4/UDP/Geneve,
// options of opt_words words, around an inner Ethernet frame.
struct Outer {
    uint32_t src = 0x0af4020a, dst = 0x0af40201; // ztunnel -> node
    uint16_t dport = 6081;
    uint8_t version = 0, opt_words = 0, flags = 0; // flags: 0x80 O, 0x40 C
    uint32_t vni = 1001;
    uint8_t ecn = 0;
    bool bad_ip_checksum = false;
    uint16_t proto = 0x6558;
};
std::vector<uint8_t> geneve(const Outer& o, const std::vector<uint8_t>& inner);

} // namespace ztg::test
