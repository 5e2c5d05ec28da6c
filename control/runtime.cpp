#include "control/runtime.hpp"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <spdlog/spdlog.h>

#include "control/eal.hpp"
#include "control/ether.hpp"
#include "control/snapshot_builder.hpp"
#include "pipelines/endpoint.hpp"
#include "pipelines/node.hpp"

namespace ztg {

namespace {

struct Launch {
    WorkerCtx* ctx;
    const Pipeline* pipeline;
};

int launch(void* arg) {
    auto* l = static_cast<Launch*>(arg);
    run_worker(*l->ctx, *l->pipeline);
    return 0;
}

} // namespace

Runtime::~Runtime() {
    stop();
    if (eal_up_) rte_eal_cleanup();
}

Status Runtime::claim_interfaces() {
    return locks_.claim(cfg_);
}

Status Runtime::init_eal(const std::string& argv0, const std::string& prefix_override) {
    // net_af_xdp probes the aggregation devices: they must exist first.
    if (auto s = xdp_.make_devices(cfg_); !s) return s;
    if (auto s = ztg::init_eal(cfg_, argv0, prefix_override); !s) return s;
    eal_up_ = true;
    return Ok{};
}

void Runtime::publish() {
    auto s = build_snapshot(cfg_, topo_, nexthop_, generation_.load(std::memory_order_relaxed) + 1);
    generation_.store(s->generation, std::memory_order_relaxed);
    const Snapshot* old = shared_.snapshot.exchange(s.release(), std::memory_order_acq_rel);
    if (old != nullptr) {
        if (workers_running_) rcu_->synchronize(); // no worker still reads `old`
        delete old;
    }
}

Status Runtime::start_workers() {
    const uint32_t w = cfg_.dpdk.workers;
    rcu_ = std::make_unique<Rcu>(w);
    if (!rcu_->ok()) return err("dpdk.memory_mb: cannot allocate the QSBR variable");
    pods_ = std::make_unique<PodTable>("ztg_pods", cfg_.pod_capacity, *rcu_);
    if (!pods_->ok())
        return err("limits.pods: cannot create a pod table of " +
                   std::to_string(cfg_.pod_capacity) + " (" + rte_strerror(rte_errno) +
                   "); raise dpdk.memory_mb or lower limits.pods");
    for (size_t i = 0; i < cfg_.pods.size() && cfg_.kernel.mode != KernelMode::Program;
         i++) // program: the mirror adds them
        if (!pods_->add(cfg_.pods[i]))
            return err("pods[" + std::to_string(i) + "]: cannot add " + format_ip(cfg_.pods[i]) +
                       " to the pod table");
    if (cfg_.inbound.enabled) {
        flows_ = std::make_unique<FlowTable>("ztg_flows", cfg_.inbound.max_flows, *rcu_);
        if (!flows_->ok())
            return err("inbound.flows.max: cannot create a flow table of " +
                       std::to_string(cfg_.inbound.max_flows) + "; raise dpdk.memory_mb");
    }
    if (cfg_.tunnel.next_hop_mac) nexthop_ = to_ether(*cfg_.tunnel.next_hop_mac);
    publish();

    shared_.topo = &topo_;
    shared_.pods = pods_.get();
    shared_.flows = flows_.get();
    shared_.rcu = rcu_.get();
    shared_.pool = pool_;
    shared_.idle_sleep_us = cfg_.dpdk.idle_sleep_us;
    counters_.resize(w);
    for (uint32_t i = 0; i < w; i++) {
        counters_[i] = std::vector<DeviceCounters>(topo_.devs.size());
        events_.push_back(std::make_unique<EventQueue>());
        auto ctx = std::make_unique<WorkerCtx>();
        ctx->id = uint16_t(i);
        ctx->shared = &shared_;
        ctx->counters = &counters_[i];
        ctx->events = events_.back().get();
        ctx->vector_path = cfg_.dpdk.vector_path;
        workers_.push_back(std::move(ctx));
    }
    const Pipeline& pipeline = cfg_.role == Role::Node ? node_pipeline() : endpoint_pipeline();
    static std::vector<Launch> launches;
    launches.clear();
    for (auto& ctx : workers_) launches.push_back({ctx.get(), &pipeline});
    unsigned lcore;
    uint32_t i = 0;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        if (i == w) break;
        if (int rc = rte_eal_remote_launch(launch, &launches[i], lcore); rc != 0)
            return err("dpdk.workers: cannot launch worker " + std::to_string(i) + " on lcore " +
                       std::to_string(lcore));
        worker_lcores_.push_back(lcore);
        i++;
    }
    workers_running_ = true;
    if (i != w) return err("dpdk.workers: only " + std::to_string(i) + " worker lcores available");
    // The sockets are polled now: the links' programs may hand frames over.
    if (auto s = xdp_.attach(cfg_, cfg_.kernel.mode == KernelMode::Program ? std::vector<Ip4>{}
                                                                           : cfg_.pods);
        !s)
        return s;
    return discovery_.start(cfg_, xdp_); // the mirror's pods come through add_pod
}

Status Runtime::start_kernel() {
    if (cfg_.kernel.mode == KernelMode::Off) return Ok{};
    mirror_ = std::make_unique<KernelMirror>(cfg_, *this);
    auto s = mirror_->start();
    spdlog::info("kernel: mode {}, ipset {}, {} pods in the table",
                 cfg_.kernel.mode == KernelMode::Observe ? "observe" : "program", cfg_.kernel.ipset,
                 pod_count());
    return s;
}

// The kernel's meshed set follows the table: a pod is in the table before the kernel hands
// its frames over, and out of the kernel's set before it leaves the table. links: auto
// attaches the pod's link after both, and detaches it after both (poll_events).
bool Runtime::add_pod(Ip4 ip) {
    const bool ok = pods_->add(ip);
    if (ok) {
        xdp_.mesh(ip, true);
        discovery_.pod(ip, true);
    }
    return ok;
}
bool Runtime::del_pod(Ip4 ip) {
    xdp_.mesh(ip, false);
    discovery_.pod(ip, false);
    return pods_->del(ip);
}
void Runtime::pods_committed() {
    pods_->reclaim();
}

void Runtime::poll_events() {
    if (mirror_) mirror_->poll();
    discovery_.poll(xdp_); // after the mirror: the pods it changed get or lose their links
    ring_stats_.poll();
    if (workers_running_) {
        drop_watch_.check(info_, [this](size_t d, Ctr c) { return counter(d, c); });
        watch_taps();
    }
    expire_flows();
    bool changed = false;
    for (auto& q : events_) {
        Event e;
        while (q->pop(e)) {
            if (e.kind == Event::Kind::NextHopMac &&
                (!nexthop_ || !rte_is_same_ether_addr(&*nexthop_, &e.mac))) {
                spdlog::info("tunnel peer {} is at {}{}", format_ip(e.ip), ether_str(e.mac),
                             nexthop_ ? " (was " + ether_str(*nexthop_) + ")" : "");
                nexthop_ = e.mac;
                changed = true;
            } else if (e.kind == Event::Kind::PodSeen && e.dev < info_.size()) {
                const PodLocation loc = PodLocation::of(e.dev, e.mac);
                if (pods_->location(e.ip) != loc && pods_->set_location(e.ip, loc))
                    spdlog::info("pod {} is at {} on port {}", format_ip(e.ip), ether_str(e.mac),
                                 info_[e.dev].name);
            }
        }
    }
    if (changed) publish();
}

// Four times a second: what was idle longer than inbound.flows.idle_timeout_s (closing:
// closing_timeout_s; a captured DNS query: dns_idle_timeout_s) leaves the flow table; its
// slots are free after a grace period.
// At 16 ticks a second, the longest timeout is far below the half wrap that the sweep tells
// apart from a tick stamped after its `now`.
static_assert(uint64_t(InboundConfig::kMaxTimeoutS) * 16 < FlowTable::kTickMask / 2);

void Runtime::expire_flows() {
    if (!flows_ || !workers_running_) return;
    const uint64_t now = rte_get_tsc_cycles();
    if (now < next_expiry_tsc_) return;
    next_expiry_tsc_ = now + rte_get_tsc_hz() / 4;
    const InboundConfig& in = cfg_.inbound;
    flows_->expire(flows_->tick(now), flows_->ticks_of_ms(uint64_t(in.idle_timeout_s) * 1000),
                   flows_->ticks_of_ms(uint64_t(in.closing_timeout_s) * 1000),
                   flows_->ticks_of_ms(uint64_t(in.dns_idle_timeout_s) * 1000));
}

void Runtime::stop() {
    xdp_.detach(); // the kernel carries every link's frames from here on
    mirror_.reset();
    if (workers_running_) {
        shared_.stop.store(true, std::memory_order_release);
        for (unsigned l : worker_lcores_) rte_eal_wait_lcore(l);
        workers_running_ = false;
    }
    segment_.detach();
    ring_stats_.poll(true); // the last of them, before the sockets close
    ring_stats_.close();
    for (uint16_t d = 0; d < started_.size(); d++) {
        if (!started_[d]) continue;
        rte_eth_dev_stop(topo_.devs[d].port_id);
        started_[d] = false;
    }
    for (size_t d = 0; d < topo_.devs.size(); d++) // net_tap removes its tap
        if (d >= present_.size() || present_[d]) rte_eth_dev_close(topo_.devs[d].port_id);
    topo_.devs.clear();
    xdp_.remove_devices(); // net_af_xdp has taken its program off them
    delete shared_.snapshot.exchange(nullptr, std::memory_order_acq_rel);
    if (pods_) final_pods_ = pods_->size();
    pods_.reset();
    flows_.reset();
    rcu_.reset();
    if (pool_ != nullptr) {
        final_mbufs_ = rte_mempool_in_use_count(pool_);
        if (final_mbufs_ != 0)
            spdlog::error("{} mbufs were not returned to the pool", final_mbufs_);
        rte_mempool_free(pool_);
        pool_ = nullptr;
    }
}

unsigned Runtime::mbufs_in_use() const {
    return pool_ != nullptr ? rte_mempool_in_use_count(pool_) : final_mbufs_;
}

} // namespace ztg
