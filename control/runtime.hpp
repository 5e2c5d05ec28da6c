// The running dataplane as the control thread sees it: EAL, ports, the pod table, the
// published snapshot, the workers and their counters and event queues. Runtime puts the
// pieces together in order; each job is its own file: locks (one ztgeneve per interface),
// eal (arguments), ports (pool size, queues), snapshot_builder, reload (what may change
// live), drop_watch, ring_stats (af_packet drops), taps (re-creation), reports (counters),
// xdp_segment (pods' TSO/GSO segmented by their kernel).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/result.hpp"
#include "control/devargs.hpp"
#include "control/drop_watch.hpp"
#include "control/inbox.hpp"
#include "control/kernel/mirror.hpp"
#include "control/locks.hpp"
#include "control/ring_stats.hpp"
#include "control/xdp_attach.hpp"
#include "control/xdp_discovery.hpp"
#include "control/xdp_segment.hpp"
#include "dataplane/worker.hpp"

namespace ztg {

// A pod as the control thread knows it (control/runtime_view.cpp).
struct PodRow {
    Ip4 ip;
    std::string device; // where its traffic was last seen; empty: not seen yet
    std::string mac;
};

// What only the control thread may read, as of one moment (control/runtime_view.cpp).
struct ControlStatus {
    std::vector<bool> link_up;  // [device]
    std::vector<bool> is_port;  // [device]: a configured port, not a twin
    bool nexthop_known = false; // the tunnel peer's MAC (static or learned by ARP)
    std::string nexthop_mac;
    bool kernel_mirror = false; // kernel.mode observe or program
    bool kernel_synced = false; // its first ipset sync succeeded
    double kernel_sync_age_s = 0;
    uint64_t kernel_sync_errors = 0;
    bool kernel_observe = false; // observe: the reference objects at the last read
    size_t kernel_present = 0, kernel_missing = 0, kernel_different = 0;
    uint32_t pods_located = 0;
    bool flow_table = false; // inbound on
    uint32_t flows = 0, flows_capacity = 0;
    uint64_t flows_expired = 0;
};

class Runtime : public PodSink {
  public:
    explicit Runtime(Config cfg) : cfg_(std::move(cfg)) {}
    ~Runtime() override;

    // Start-up, in order; each returns an error naming the config key or DPDK device.
    // claim_interfaces: one ztgeneve per kernel interface and network namespace (a lock
    // the kernel drops when the process dies, so a restart after kill -9 just works).
    Status claim_interfaces();
    Status init_eal(const std::string& argv0, const std::string& file_prefix_override);
    Status open_ports();
    Status start_workers();
    // kernel.mode observe/program: start mirroring. An error here is reported but not
    // fatal: what could be installed or read is, and the dataplane runs on.
    Status start_kernel();

    // PodSink: the kernel mirror and reloads change the pod table through these.
    bool add_pod(Ip4 ip) override;
    bool del_pod(Ip4 ip) override;
    void pods_committed() override;

    // SIGHUP: re-read the config file. What can change live (pods, log.level,
    // kernel.poll_ms) is applied; any other change is refused, naming the key.
    Status reload();

    // Control loop body: drains worker events, republishes the snapshot if needed.
    void poll_events(); // and the kernel mirror
    void expire_flows();
    void stop(); // stops workers, drains and closes ports

    // Counters summed over workers, as JSON: {"ports": {...}, "workers": [...], ...}.
    std::string counters_json() const;
    std::string counters_table() const;
    uint64_t counter(size_t dev, Ctr c) const;
    const std::vector<DeviceInfo>& devices() const { return info_; }
    const Config& config() const { return cfg_; }
    uint32_t pod_count() const { return pods_ ? pods_->size() : final_pods_; }
    // mbufs taken from the pool (rx rings, in flight, tx rings); after stop(): what was
    // never returned, i.e. a leak if not 0.
    unsigned mbufs_in_use() const;

    // For the metrics, health and telemetry threads (control/runtime_view.cpp). Lock-free,
    // any thread, between start_workers() and stop(): relaxed loads of what workers count.
    size_t worker_count() const { return workers_.size(); }
    uint64_t worker_counter(size_t w, size_t dev, Ctr c) const { return counters_[w][dev].get(c); }
    uint64_t worker_rounds(size_t w) const {
        return workers_[w]->rounds.load(std::memory_order_relaxed);
    }
    uint64_t ring_drops(size_t dev) const { return ring_stats_.drops(dev); }
    // The in-kernel counters of attach: xdp links (BPF map reads: any thread).
    std::vector<XdpLinkCounters> xdp_counters() const { return xdp_.counters(); }
    unsigned mbufs_total() const;
    // Control thread only: ask through inbox().
    std::vector<PodRow> pod_rows() const;
    ControlStatus control_status() const;
    ControlInbox& inbox() { return inbox_; }

  private:
    Result<uint16_t> open_device(const std::string& devargs, const std::string& key, DevKind kind);
    Status setup_queues(uint16_t dev);
    void publish(); // a snapshot of cfg_, topo_ and nexthop_, the next generation

    Config cfg_;
    bool eal_up_ = false;
    std::unique_ptr<Rcu> rcu_;
    std::unique_ptr<PodTable> pods_;
    std::unique_ptr<FlowTable> flows_; // inbound: ztunnel's proxied connections
    uint64_t next_expiry_tsc_ = 0;
    rte_mempool* pool_ = nullptr;
    Topology topo_;
    std::vector<DeviceInfo> info_;
    std::vector<bool> started_;
    Shared shared_;
    std::vector<std::unique_ptr<WorkerCtx>> workers_;
    std::vector<std::vector<DeviceCounters>> counters_; // [worker][device]
    std::vector<std::unique_ptr<EventQueue>> events_;
    std::vector<unsigned> worker_lcores_;
    bool workers_running_ = false;
    std::atomic<uint64_t> generation_{0}; // read by the telemetry thread
    std::optional<rte_ether_addr> nexthop_;
    uint32_t final_pods_ = 0;  // pod count when the table was freed, for the exit report
    unsigned final_mbufs_ = 0; // mbufs not back in the pool after every device closed
    std::unique_ptr<KernelMirror> mirror_;
    InterfaceLocks locks_; // held for the life of the process
    RingStats ring_stats_; // drop_kernel_ring
    DropWatch drop_watch_;
    XdpSegment segment_;     // the XDP pass program on net_af_packet ports' veths
    XdpAttach xdp_;          // ports with attach: xdp: their programs and aggregation devices
    XdpDiscovery discovery_; // links: auto: the pods port's links follow the meshed pods
    // net_tap devices (twins, endpoint tunnel taps): a tap whose kernel interface is deleted
    // under us is taken out of service, removed and probed again with its devargs, MAC and
    // MTU, checked once a second. Frames for it meanwhile count as drop_tx_full.
    struct Tap {
        size_t dev;
        std::string ifname;
        unsigned ifindex;
        rte_ether_addr mac;
        unsigned mtu = 0;     // the kernel's, last seen (the owner may have changed it)
        bool failing = false; // the last attempt to re-create it failed (logged once)
        bool waiting = false; // another interface holds its name (logged once)
    };
    void find_taps();
    void watch_taps();
    Status recreate(Tap& t);
    std::vector<Tap> taps_;
    std::vector<bool> present_; // [device] its DPDK port exists (a re-probe may have failed)
    std::chrono::steady_clock::time_point next_tap_watch_{};
    ControlInbox inbox_;
};

// Telemetry commands (/ztgeneve/counters, /ztgeneve/info) over DPDK's telemetry socket.
void telemetry_attach(Runtime* rt);
void telemetry_detach();

} // namespace ztg
