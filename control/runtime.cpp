#include "control/runtime.hpp"

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <set>
#include <sstream>
#include <string_view>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

#include "pipelines/endpoint.hpp"
#include "pipelines/node.hpp"

namespace ztg {

namespace {

constexpr uint16_t kRxDesc = 512;
constexpr uint16_t kTxDesc = 512;

rte_ether_addr to_ether(const Mac& m) {
    rte_ether_addr a;
    std::memcpy(a.addr_bytes, m.data(), 6);
    return a;
}

std::string ether_str(const rte_ether_addr& a) {
    char b[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(b, sizeof b, &a);
    return b;
}

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
    for (int fd : lock_fds_) close(fd);
}

Status Runtime::claim_interfaces() {
    struct stat ns {};
    if (stat("/proc/self/ns/net", &ns) != 0)
        return err("cannot identify the network namespace: " + std::string(strerror(errno)));
    const std::string dir = "/run/ztgeneve";
    mkdir(dir.c_str(), 0755);
    auto claim = [&](const std::string& devargs, const std::string& key) -> Status {
        const auto at = devargs.find("iface=");
        if (at == std::string::npos) return Ok{};
        const std::string iface = devargs.substr(at + 6, devargs.find(',', at) - at - 6);
        const std::string path = dir + "/" + std::to_string(ns.st_ino) + "." + iface + ".lock";
        const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) return err(key + ": cannot create " + path + ": " + strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = {};
            const ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
            close(fd);
            return err(key + ": interface " + iface + " is in use by another ztgeneve" +
                       (n > 0 ? " (pid " + std::string(pid, size_t(n)) + ")" : "") +
                       " in this network namespace");
        }
        const std::string me = std::to_string(getpid());
        if (ftruncate(fd, 0) != 0 ||
            pwrite(fd, me.data(), me.size(), 0) < 0) { /* the lock is what matters */
        }
        lock_fds_.push_back(fd);
        return Ok{};
    };
    for (size_t i = 0; i < cfg_.ports.size(); i++) {
        const std::string key = "ports[" + std::to_string(i) + "]";
        if (auto st = claim(cfg_.ports[i].devargs, key + ".devargs"); !st) return st;
        if (cfg_.ports[i].twin)
            if (auto st = claim(*cfg_.ports[i].twin, key + ".twin"); !st) return st;
    }
    return Ok{};
}

Status Runtime::init_eal(const std::string& argv0, const std::string& prefix_override) {
    const DpdkConfig& d = cfg_.dpdk;
    std::vector<std::string> a = {argv0};
    std::string prefix = !prefix_override.empty() ? prefix_override
                         : !d.file_prefix.empty() ? d.file_prefix
                                                  : "ztgeneve-" + std::to_string(getpid());
    a.push_back("--file-prefix=" + prefix);
    // lcore 0 is the control thread; worker i runs on lcore i, pinned to cpu i mod ncpu.
    const unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
    std::string lcores = "0@0";
    for (uint32_t i = 1; i <= d.workers; i++)
        lcores += "," + std::to_string(i) + "@" + std::to_string(i % ncpu);
    a.push_back("--lcores=" + lcores);
    a.push_back("-m");
    a.push_back(std::to_string(d.memory_mb));
    if (d.no_huge) a.push_back("--no-huge");
    a.push_back("--no-pci");
    a.push_back("--log-level=*:warning");
    for (const auto& p : cfg_.ports) {
        a.push_back("--vdev=" + p.devargs);
        if (p.twin) a.push_back("--vdev=" + *p.twin);
    }
    for (const auto& e : d.eal_args) a.push_back(e);

    std::string line;
    for (const auto& s : a) line += " " + s;
    spdlog::debug("EAL arguments:{}", line);
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    if (rte_eal_init(int(argv.size()), argv.data()) < 0)
        return err("DPDK EAL init failed (" + std::string(rte_strerror(rte_errno)) +
                   "); arguments:" + line);
    eal_up_ = true;
    return Ok{};
}

Result<uint16_t> Runtime::open_device(const std::string& devargs, const std::string& key,
                                      DevKind kind) {
    const std::string name = device_name(devargs);
    uint16_t port_id;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port_id) != 0)
        return err(key + ": DPDK device '" + name +
                   "' did not probe (see the EAL message above; is the interface there?)");
    Device dev;
    dev.port_id = port_id;
    dev.kind = kind;
    topo_.devs.push_back(dev);
    return uint16_t(topo_.devs.size() - 1);
}

Status Runtime::setup_queues(uint16_t d) {
    Device& dev = topo_.devs[d];
    const DeviceInfo& inf = info_[d];
    const uint16_t q = uint16_t(cfg_.dpdk.workers);
    rte_eth_dev_info di;
    if (int rc = rte_eth_dev_info_get(dev.port_id, &di); rc != 0)
        return err(inf.key + ": cannot query device: " + rte_strerror(-rc));
    if (di.max_rx_queues < q || di.max_tx_queues < q)
        return err(inf.key + ": device '" + device_name(inf.devargs) + "' offers " +
                   std::to_string(di.max_rx_queues) + " rx / " + std::to_string(di.max_tx_queues) +
                   " tx queues; " + std::to_string(q) + " workers need " + std::to_string(q) +
                   " (net_af_packet: add qpairs=" + std::to_string(q) + ")");
    rte_eth_conf conf{};
    if (q > 1 && di.flow_type_rss_offloads != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf =
            (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & di.flow_type_rss_offloads;
    }
    if (int rc = rte_eth_dev_configure(dev.port_id, q, q, &conf); rc != 0)
        return err(inf.key + ": configuring '" + device_name(inf.devargs) +
                   "' failed: " + rte_strerror(-rc));
    uint16_t nrx = kRxDesc, ntx = kTxDesc;
    rte_eth_dev_adjust_nb_rx_tx_desc(dev.port_id, &nrx, &ntx);
    const int socket = rte_eth_dev_socket_id(dev.port_id);
    for (uint16_t i = 0; i < q; i++) {
        if (int rc = rte_eth_rx_queue_setup(dev.port_id, i, nrx, unsigned(socket), nullptr, pool_);
            rc != 0)
            return err(inf.key + ": rx queue " + std::to_string(i) +
                       " setup failed: " + rte_strerror(-rc));
        if (int rc = rte_eth_tx_queue_setup(dev.port_id, i, ntx, unsigned(socket), nullptr);
            rc != 0)
            return err(inf.key + ": tx queue " + std::to_string(i) +
                       " setup failed: " + rte_strerror(-rc));
    }
    if (int rc = rte_eth_dev_start(dev.port_id); rc != 0)
        return err(inf.key + ": starting '" + device_name(inf.devargs) +
                   "' failed: " + rte_strerror(-rc));
    started_[d] = true;
    if (port_kind(dev.kind).promiscuous)
        rte_eth_promiscuous_enable(dev.port_id); // frames for the twin's MAC
    rte_ether_addr mac;
    rte_eth_macaddr_get(dev.port_id, &mac);
    if (!workers_running_) dev.mac = mac; // workers read it: a re-created tap keeps its MAC
    return Ok{};
}

Status Runtime::open_ports() {
    const uint32_t w = cfg_.dpdk.workers;
    // Every device's rings full, plus what workers hold in flight, plus slack.
    size_t ndev = 0;
    for (const auto& p : cfg_.ports) ndev += p.twin ? 2 : 1;
    // A pool smaller than the rx rings it must fill leaves nothing to receive into: the
    // PMDs (net_tap first) would take every mbuf and the dataplane would stall silently.
    const uint32_t rings = uint32_t(ndev * w * kRxDesc);
    const uint32_t minimum = rings + w * 4 * kBurst + 1024;
    if (cfg_.dpdk.mbufs != 0 && cfg_.dpdk.mbufs < minimum)
        return err("dpdk.mbufs: " + std::to_string(cfg_.dpdk.mbufs) +
                   " mbufs cannot fill the rx rings of " + std::to_string(ndev) + " devices (" +
                   std::to_string(rings) + " descriptors) and keep " + "packets moving; at least " +
                   std::to_string(minimum) + " are needed");
    const uint32_t mbufs = cfg_.dpdk.mbufs != 0
                               ? cfg_.dpdk.mbufs
                               : uint32_t(ndev * w * (kRxDesc + kTxDesc) + w * 4 * kBurst + 2048);
    pool_ = rte_pktmbuf_pool_create("ztg_mbufs", mbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                    int(rte_socket_id()));
    if (pool_ == nullptr)
        return err("dpdk.memory_mb: cannot allocate " + std::to_string(mbufs) + " mbufs (" +
                   rte_strerror(rte_errno) + "); raise dpdk.memory_mb or set dpdk.mbufs");

    for (size_t i = 0; i < cfg_.ports.size(); i++) {
        const PortConfig& p = cfg_.ports[i];
        const std::string key = "ports[" + std::to_string(i) + "]";
        const DevKind kind = p.kind;
        auto d = open_device(p.devargs, key + ".devargs", kind);
        if (!d) return err(d.error());
        info_.push_back({p.name, p.devargs, key + ".devargs"});
        if (port_kind(kind).link) topo_.link = *d;
        if (port_kind(kind).carries_vni) topo_.devs[*d].vni = *p.vni;
        if (p.twin) {
            auto t = open_device(*p.twin, key + ".twin", DevKind::Twin);
            if (!t) return err(t.error());
            info_.push_back({p.name + ".twin", *p.twin, key + ".twin"});
            topo_.devs[*d].peer = *t;
            topo_.devs[*t].peer = *d;
        }
    }
    started_.assign(topo_.devs.size(), false);
    present_.assign(topo_.devs.size(), true);
    for (uint16_t d = 0; d < topo_.devs.size(); d++)
        if (auto s = setup_queues(d); !s) return s;
    find_packet_sockets();
    find_taps();
    // A port answers to its twin's MAC, the address the kernel gives its neighbours,
    // unless the config names one.
    for (auto& dev : topo_.devs)
        if (dev.kind != DevKind::Twin && dev.peer != kNoDev) dev.mac = topo_.devs[dev.peer].mac;
    for (size_t d = 0, p = 0; d < topo_.devs.size(); d++) {
        if (topo_.devs[d].kind == DevKind::Twin) continue;
        if (cfg_.ports[p].mac) topo_.devs[d].mac = to_ether(*cfg_.ports[p].mac);
        p++;
    }
    return Ok{};
}

std::unique_ptr<Snapshot> Runtime::build_snapshot() const {
    auto s = std::make_unique<Snapshot>();
    const TunnelConfig& t = cfg_.tunnel;
    s->remote_ip = Ip4::from_host(t.remote_ip);
    s->local_ip = Ip4::from_host(t.local_ip);
    for (uint8_t p : cfg_.protocols) s->set_redirect(p);
    s->max_inner_len = uint16_t(t.mtu - kOuterLen);
    s->fragment = t.fragment;
    s->link_mac = topo_.devs[topo_.link].mac;
    s->nexthop_known = nexthop_.has_value();
    s->arp_refresh_ms = t.next_hop_mac ? 0 : t.arp_refresh_ms;
    if (nexthop_) s->nexthop_mac = *nexthop_;
    TunnelParams tp;
    tp.outer_src = s->link_mac;
    tp.outer_dst = s->nexthop_mac;
    tp.local = s->local_ip;
    tp.remote = s->remote_ip;
    tp.vni = t.vni;
    tp.udp_port = t.udp_port;
    tp.inner_src = to_ether(t.inner_src_mac);
    tp.inner_dst = to_ether(t.inner_dst_mac);
    tp.udp_checksum = t.udp_checksum;
    s->tmpl = make_template(tp);
    s->decap.local = s->local_ip;
    s->decap.remote = s->remote_ip;
    s->decap.udp_port = t.udp_port;
    s->vni = t.vni;
    s->inner_ip = Ip4::from_host(t.inner_ip);
    s->inner_mac = tp.inner_src;
    s->tunnel_tmpl.resize(topo_.devs.size());
    for (size_t d = 0; d < topo_.devs.size(); d++)
        if (topo_.devs[d].kind == DevKind::Tunnel) {
            TunnelParams per = tp;
            per.vni = topo_.devs[d].vni;
            s->tunnel_tmpl[d] = make_template(per);
        }
    s->generation = generation_.load(std::memory_order_relaxed) + 1;
    return s;
}

void Runtime::publish(std::unique_ptr<Snapshot> s) {
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
        if (!pods_->add(Ip4::from_host(cfg_.pods[i])))
            return err("pods[" + std::to_string(i) + "]: cannot add " + format_ip(cfg_.pods[i]) +
                       " to the pod table");
    if (cfg_.tunnel.next_hop_mac) nexthop_ = to_ether(*cfg_.tunnel.next_hop_mac);
    publish(build_snapshot());

    shared_.topo = &topo_;
    shared_.pods = pods_.get();
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
    return Ok{};
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

bool Runtime::add_pod(uint32_t ip) {
    return pods_->add(Ip4::from_host(ip));
}
bool Runtime::del_pod(uint32_t ip) {
    return pods_->del(Ip4::from_host(ip));
}
void Runtime::pods_committed() {
    pods_->reclaim();
}

Status Runtime::reload() {
    auto next = load_config(cfg_.source);
    if (!next) return err(next.error());
    Config& n = *next;
    // Everything but pods, log.level and kernel.poll_ms must be as it was.
    Config cmp = n;
    cmp.pods = cfg_.pods;
    cmp.log_level = cfg_.log_level;
    cmp.kernel.poll_ms = cfg_.kernel.poll_ms;
    // Whole sections compared with their defaulted ==, so a key added later cannot
    // slip through as "changeable" without being applied.
    auto same = [](const Config& a, const Config& b) -> std::string {
        if (a.role != b.role) return "role";
        if (a.ports.size() != b.ports.size()) return "ports";
        for (size_t i = 0; i < a.ports.size(); i++)
            if (!(a.ports[i] == b.ports[i])) return "ports[" + std::to_string(i) + "]";
        if (!(a.tunnel == b.tunnel)) return "tunnel";
        if (a.protocols != b.protocols) return "redirect.protocols";
        if (a.pod_capacity != b.pod_capacity) return "limits.pods";
        if (!(a.kernel == b.kernel)) return "kernel";
        if (!(a.dpdk == b.dpdk)) return "dpdk";
        if (!(a.metrics == b.metrics)) return "metrics";
        return "";
    };
    if (const std::string key = same(cmp, cfg_); !key.empty())
        return err(cfg_.source + ": " + key +
                   " cannot change while running (restart ztgeneve); nothing was applied");
    // Pods: the difference, as one batch. In observe mode the ipset is the truth.
    size_t added = 0, removed = 0;
    if (cfg_.kernel.mode != KernelMode::Observe) {
        std::set<uint32_t> before(cfg_.pods.begin(), cfg_.pods.end()),
            after(n.pods.begin(), n.pods.end());
        for (uint32_t ip : before)
            if (!after.count(ip)) removed += del_pod(ip);
        for (uint32_t ip : after)
            if (!before.count(ip)) {
                if (!add_pod(ip))
                    return err("pods: " + format_ip(ip) +
                               " does not fit the pod table (limits.pods)");
                added++;
            }
        pods_committed();
        if (mirror_)
            if (auto s = mirror_->set_pods(n.pods); !s) spdlog::warn("kernel: {}", s.error());
    }
    spdlog::set_level(spdlog::level::from_str(n.log_level));
    spdlog::info("reloaded {}: {} pods added, {} removed, {} in the table", cfg_.source, added,
                 removed, pod_count());
    const std::string source = cfg_.source;
    cfg_ = std::move(n);
    cfg_.source = source;
    return Ok{};
}

void Runtime::watch_drops() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_drop_watch_) return;
    next_drop_watch_ = now + std::chrono::seconds(1);
    drops_seen_.resize(info_.size(), 0);
    dropping_.resize(info_.size(), false);
    for (size_t d = 0; d < info_.size(); d++) {
        uint64_t total = 0;
        std::string what;
        for (size_t c = 0; c < kNumCtr; c++) {
            if (std::string_view(kCtrName[c]).rfind("drop_", 0) != 0) continue;
            const uint64_t v = counter(d, Ctr(c));
            total += v;
            if (v != 0)
                what +=
                    std::string(what.empty() ? "" : ", ") + kCtrName[c] + " " + std::to_string(v);
        }
        const uint64_t delta = total - drops_seen_[d];
        drops_seen_[d] = total;
        if (delta != 0 && !dropping_[d]) {
            spdlog::warn("{}: dropping frames ({}; see the counters' meaning in the README)",
                         info_[d].name, what);
            dropping_[d] = true;
        } else if (delta == 0 && dropping_[d]) {
            spdlog::info("{}: no more drops ({})", info_[d].name, what);
            dropping_[d] = false;
        }
    }
}

// An interface's MTU as the kernel has it now, 0 if it cannot be read.
static unsigned kernel_mtu(const std::string& ifname) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    ifreq r{};
    std::strncpy(r.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
    const int rc = ioctl(fd, SIOCGIFMTU, &r);
    close(fd);
    return rc == 0 ? unsigned(r.ifr_mtu) : 0;
}

void Runtime::find_taps() {
    for (size_t d = 0; d < topo_.devs.size(); d++) {
        rte_eth_dev_info di;
        char name[IF_NAMESIZE];
        if (rte_eth_dev_info_get(topo_.devs[d].port_id, &di) != 0 ||
            std::strcmp(di.driver_name, "net_tap") != 0 || di.if_index == 0 ||
            if_indextoname(di.if_index, name) == nullptr)
            continue;
        Tap t{d, name, di.if_index, {}, kernel_mtu(name)};
        rte_eth_macaddr_get(topo_.devs[d].port_id, &t.mac);
        taps_.push_back(t);
    }
}

Status Runtime::recreate(Tap& t) {
    Device& dev = topo_.devs[t.dev];
    const std::string& devargs = info_[t.dev].devargs;
    const std::string name = device_name(devargs);
    if (present_[t.dev]) { // out of service already: no worker uses the port
        if (started_[t.dev]) rte_eth_dev_stop(dev.port_id);
        started_[t.dev] = false;
        if (int rc = rte_eal_hotplug_remove("vdev", name.c_str()); rc != 0)
            return err("removing DPDK device '" + name + "' failed: " + rte_strerror(-rc));
        present_[t.dev] = false;
    }
    const size_t comma = devargs.find(',');
    const std::string args = comma == std::string::npos ? "" : devargs.substr(comma + 1);
    if (int rc = rte_eal_hotplug_add("vdev", name.c_str(), args.c_str()); rc != 0)
        return err("probing '" + devargs + "' failed: " + rte_strerror(-rc));
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) {
        rte_eal_hotplug_remove("vdev", name.c_str());
        return err("DPDK device '" + name + "' probed but has no port");
    }
    present_[t.dev] = true;
    dev.port_id = port;
    if (int rc = rte_eth_dev_default_mac_addr_set(port, &t.mac); rc != 0) // neighbours know it
        spdlog::warn("{}: cannot give {} its MAC {} back: {}", info_[t.dev].name, t.ifname,
                     ether_str(t.mac), rte_strerror(-rc));
    if (auto s = setup_queues(uint16_t(t.dev)); !s) return s;
    if (t.mtu != 0)
        if (int rc = rte_eth_dev_set_mtu(port, uint16_t(t.mtu)); rc != 0)
            spdlog::warn("{}: cannot give {} its MTU {} back: {}", info_[t.dev].name, t.ifname,
                         t.mtu, rte_strerror(-rc));
    rte_eth_macaddr_get(port, &t.mac);
    t.ifindex = if_nametoindex(t.ifname.c_str());
    dev.in_service.v.store(true, std::memory_order_release);
    return Ok{};
}

void Runtime::watch_taps() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_tap_watch_) return;
    next_tap_watch_ = now + std::chrono::seconds(1);
    for (Tap& t : taps_) {
        Device& d = topo_.devs[t.dev];
        const unsigned index = if_nametoindex(t.ifname.c_str());
        const std::string& dev = info_[t.dev].name;
        if (d.in_service.get()) {
            if (index == t.ifindex) {
                if (unsigned mtu = kernel_mtu(t.ifname); mtu != 0 && mtu != t.mtu) {
                    spdlog::info("{}: {} has MTU {} (given back if it is re-created)", dev,
                                 t.ifname, mtu);
                    t.mtu = mtu;
                }
                continue;
            }
            spdlog::warn("{}: kernel interface {} is gone; re-creating it (frames for it count "
                         "as drop_tx_full meanwhile)",
                         dev, t.ifname);
            d.in_service.v.store(false, std::memory_order_release);
            rcu_->synchronize(); // no worker is in a burst on the port any more
        }
        // net_tap stops and closes by interface name: while another interface holds the
        // name, our port is left alone, or that interface would be set down.
        if (index != 0) {
            if (!t.waiting)
                spdlog::warn("{}: another interface holds the name {}; re-creating it once the "
                             "name is free",
                             dev, t.ifname);
            t.waiting = true;
            continue;
        }
        t.waiting = false;
        if (auto s = recreate(t); !s) {
            if (!t.failing)
                spdlog::error("{}: cannot re-create {}: {} (trying again every second)", dev,
                              t.ifname, s.error());
            t.failing = true;
            continue;
        }
        t.failing = false;
        spdlog::info("{}: {} re-created (ifindex {}, MAC {}, MTU {}); its addresses and routes "
                     "are for whoever configured them to restore",
                     dev, t.ifname, t.ifindex, ether_str(t.mac), t.mtu);
    }
}

void Runtime::poll_events() {
    if (mirror_) mirror_->poll();
    poll_ring_drops();
    if (workers_running_) {
        watch_drops();
        watch_taps();
    }
    bool changed = false;
    for (auto& q : events_) {
        Event e;
        while (q->pop(e)) {
            if (e.kind == Event::Kind::NextHopMac &&
                (!nexthop_ || !rte_is_same_ether_addr(&*nexthop_, &e.mac))) {
                spdlog::info("tunnel peer {} is at {}{}", format_ip(e.ip.host()), ether_str(e.mac),
                             nexthop_ ? " (was " + ether_str(*nexthop_) + ")" : "");
                nexthop_ = e.mac;
                changed = true;
            } else if (e.kind == Event::Kind::PodSeen && e.dev < info_.size()) {
                const PodLocation loc = PodLocation::of(e.dev, e.mac);
                if (pods_->location(e.ip) != loc && pods_->set_location(e.ip, loc))
                    spdlog::info("pod {} is at {} on port {}", format_ip(e.ip.host()),
                                 ether_str(e.mac), info_[e.dev].name);
            }
        }
    }
    if (changed) publish(build_snapshot());
}

void Runtime::stop() {
    mirror_.reset();
    if (workers_running_) {
        shared_.stop.store(true, std::memory_order_release);
        for (unsigned l : worker_lcores_) rte_eal_wait_lcore(l);
        workers_running_ = false;
    }
    next_ring_poll_ = {};
    poll_ring_drops(); // the last of them, before the sockets close
    packet_sockets_.clear();
    for (uint16_t d = 0; d < started_.size(); d++) {
        if (!started_[d]) continue;
        rte_eth_dev_stop(topo_.devs[d].port_id);
        started_[d] = false;
    }
    for (size_t d = 0; d < topo_.devs.size(); d++) // net_tap removes its tap
        if (d >= present_.size() || present_[d]) rte_eth_dev_close(topo_.devs[d].port_id);
    topo_.devs.clear();
    delete shared_.snapshot.exchange(nullptr, std::memory_order_acq_rel);
    if (pods_) final_pods_ = pods_->size();
    pods_.reset();
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

void Runtime::find_packet_sockets() {
    ring_drops_ = std::make_unique<std::atomic<uint64_t>[]>(info_.size());
    std::vector<std::pair<unsigned, size_t>> ifaces; // ifindex, device
    for (size_t d = 0; d < info_.size(); d++) {
        const auto& a = info_[d].devargs;
        const auto at = a.find("iface=");
        if (a.rfind("net_af_packet", 0) != 0 || at == std::string::npos) continue;
        const std::string iface = a.substr(at + 6, a.find(',', at) - at - 6);
        if (unsigned idx = if_nametoindex(iface.c_str()); idx != 0) ifaces.emplace_back(idx, d);
    }
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (dirent* e = readdir(dir)) {
        const int fd = atoi(e->d_name);
        int domain = 0;
        socklen_t len = sizeof domain;
        if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 ||
            domain != AF_PACKET)
            continue;
        sockaddr_ll ll{};
        len = sizeof ll;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&ll), &len) != 0) continue;
        for (const auto& [idx, d] : ifaces)
            if (unsigned(ll.sll_ifindex) == idx) packet_sockets_.emplace_back(fd, d);
    }
    closedir(dir);
}

void Runtime::poll_ring_drops() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_ring_poll_ || !ring_drops_) return;
    next_ring_poll_ = now + std::chrono::milliseconds(100);
    for (const auto& [fd, d] : packet_sockets_) {
        tpacket_stats st{};
        socklen_t len = sizeof st;
        if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0 &&
            st.tp_drops != 0) // read resets
            ring_drops_[d].fetch_add(st.tp_drops, std::memory_order_relaxed);
    }
}

uint64_t Runtime::counter(size_t dev, Ctr c) const {
    uint64_t sum = c == Ctr::drop_kernel_ring && ring_drops_
                       ? ring_drops_[dev].load(std::memory_order_relaxed)
                       : 0;
    for (const auto& w : counters_) sum += w[dev].get(c);
    return sum;
}

std::string Runtime::counters_json() const {
    std::ostringstream o;
    // all: the sum over workers plus what the control thread counts (drop_kernel_ring).
    auto block = [&](const std::vector<const std::vector<DeviceCounters>*>& ws, bool all) {
        o << "{";
        for (size_t d = 0; d < info_.size(); d++) {
            o << (d ? "," : "") << "\"" << info_[d].name << "\":{";
            for (size_t c = 0; c < kNumCtr; c++) {
                uint64_t v = 0;
                if (all)
                    v = counter(d, Ctr(c));
                else
                    for (auto* w : ws) v += (*w)[d].get(Ctr(c));
                o << (c ? "," : "") << "\"" << kCtrName[c] << "\":" << v;
            }
            o << "}";
        }
        o << "}";
    };
    std::vector<const std::vector<DeviceCounters>*> all;
    for (const auto& w : counters_) all.push_back(&w);
    o << "{\"ports\":";
    block(all, true);
    o << ",\"workers\":[";
    for (size_t i = 0; i < counters_.size(); i++) {
        o << (i ? "," : "") << "{\"id\":" << i << ",\"ports\":";
        block({&counters_[i]}, false);
        o << "}";
    }
    o << "],\"mbufs_in_use\":" << mbufs_in_use() << ",\"pods\":" << pod_count()
      << ",\"generation\":" << generation_.load(std::memory_order_relaxed) << "}";
    return o.str();
}

std::string Runtime::counters_table() const {
    std::ostringstream o;
    char line[256];
    std::snprintf(line, sizeof line, "%-22s %-18s %14s\n", "device", "counter", "packets");
    o << line;
    for (size_t d = 0; d < info_.size(); d++)
        for (size_t c = 0; c < kNumCtr; c++)
            if (uint64_t v = counter(d, Ctr(c)); v != 0) {
                std::snprintf(line, sizeof line, "%-22s %-18s %14llu\n", info_[d].name.c_str(),
                              kCtrName[c], static_cast<unsigned long long>(v));
                o << line;
            }
    return o.str();
}

} // namespace ztg
