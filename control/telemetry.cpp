// /ztgeneve/devices, /ztgeneve/counters,<device>, /ztgeneve/info and /ztgeneve/pods on
// DPDK's telemetry socket (/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2), next to DPDK's
// own /ethdev/stats. Callbacks run on DPDK's telemetry thread, under a mutex that keeps the
// runtime alive while they do; they read atomics, and ask the control thread
// (Runtime::inbox) for what only it may read (the pods' locations, the next hop).
#include <rte_telemetry.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>

#include <arpa/inet.h>
#include <unistd.h>

#include "control/runtime.hpp"

namespace ztg {

namespace {

std::mutex g_mu;
Runtime* g_rt = nullptr; // guarded by g_mu

// DPDK 22.11 accepts only [A-Za-z0-9_/] in dict keys and no nesting beyond one level, so
// device names (which may hold '-' and '.') are values of /ztgeneve/devices and the
// parameter of /ztgeneve/counters,<device>.
int devices_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
    for (const auto& dev : g_rt->devices()) rte_tel_data_add_array_string(d, dev.name.c_str());
    return 0;
}

int counters_cb(const char*, const char* params, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    const auto& devs = g_rt->devices();
    const std::string want = params != nullptr ? params : "";
    rte_tel_data_start_dict(d);
    bool found = want.empty();
    for (size_t k = 0; k < kNumCtr; k++) {
        uint64_t v = 0;
        for (size_t i = 0; i < devs.size(); i++)
            if (want.empty() || devs[i].name == want) {
                v += g_rt->counter(i, Ctr(k));
                found = true;
            }
        rte_tel_data_add_dict_u64(d, kCtrName[k], v);
    }
    return found ? 0 : -EINVAL;
}

const auto g_started = std::chrono::steady_clock::now();

int info_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_string(d, "version", ZTG_VERSION);
    rte_tel_data_add_dict_u64(d, "pid", uint64_t(getpid()));
    rte_tel_data_add_dict_u64(d, "uptime_s",
                              uint64_t(std::chrono::duration_cast<std::chrono::seconds>(
                                           std::chrono::steady_clock::now() - g_started)
                                           .count()));
    rte_tel_data_add_dict_u64(d, "pods", g_rt->pod_count());
    rte_tel_data_add_dict_u64(d, "mbufs_in_use", g_rt->mbufs_in_use());
    rte_tel_data_add_dict_u64(d, "mbufs", g_rt->mbufs_total());
    // The config is read on the control thread: a reload replaces it there.
    struct Info {
        std::string config, role, tunnel, kernel_mode, next_hop;
        uint64_t workers, capacity;
    };
    auto in = g_rt->inbox().ask([rt = g_rt] {
        const Config& c = rt->config();
        const ControlStatus st = rt->control_status();
        const char* modes[] = {"off", "observe", "program"};
        return Info{c.source,
                    c.role == Role::Node ? "node" : "endpoint",
                    format_ip(c.tunnel.local_ip) + " -> " + format_ip(c.tunnel.remote_ip) +
                        " vni " + std::to_string(c.tunnel.vni) + " port " +
                        std::to_string(c.tunnel.udp_port),
                    modes[int(c.kernel.mode)],
                    st.nexthop_known ? st.nexthop_mac : "unresolved",
                    c.dpdk.workers,
                    c.pod_capacity};
    });
    if (!in) {
        rte_tel_data_add_dict_string(d, "control", "busy: did not answer within 1 s");
        return 0;
    }
    rte_tel_data_add_dict_string(d, "config", in->config.c_str());
    rte_tel_data_add_dict_string(d, "role", in->role.c_str());
    rte_tel_data_add_dict_u64(d, "workers", in->workers);
    rte_tel_data_add_dict_u64(d, "pods_capacity", in->capacity);
    rte_tel_data_add_dict_string(d, "tunnel", in->tunnel.c_str());
    rte_tel_data_add_dict_string(d, "kernel_mode", in->kernel_mode.c_str());
    rte_tel_data_add_dict_string(d, "next_hop", in->next_hop.c_str());
    return 0;
}

// /ztgeneve/pods[,<ip>]: the pods after <ip> (none: from the first), in address order, as
// "<ip> <device> <mac>" ("-" for a pod not seen yet), as many as fit one reply; "next" is
// the parameter for the following page, absent on the last.
int pods_cb(const char*, const char* params, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    Ip4 after;
    if (params != nullptr && *params != '\0') {
        in_addr a{};
        if (inet_pton(AF_INET, params, &a) != 1) return -EINVAL;
        after = Ip4{a.s_addr}; // network order, as Ip4 holds it
    }
    auto rows = g_rt->inbox().ask([rt = g_rt] { return rt->pod_rows(); });
    if (!rows) return -EBUSY;
    rte_tel_data* list = rte_tel_data_alloc();
    if (list == nullptr) return -ENOMEM;
    rte_tel_data_start_array(list, RTE_TEL_STRING_VAL);
    // A reply holds 16 KiB of JSON: stay well inside it.
    constexpr size_t kBudget = 12 * 1024;
    size_t used = 0, n = 0;
    Ip4 last;
    bool more = false;
    auto it = std::upper_bound(rows->begin(), rows->end(), after,
                               [](Ip4 ip, const PodRow& r) { return Ip4Order{}(ip, r.ip); });
    for (; it != rows->end(); ++it) {
        std::string e = format_ip(it->ip) + " " + (it->device.empty() ? "-" : it->device) + " " +
                        (it->mac.empty() ? "-" : it->mac);
        e.resize(std::min(e.size(), size_t(RTE_TEL_MAX_STRING_LEN - 1)));
        if (n == RTE_TEL_MAX_ARRAY_ENTRIES || used + e.size() + 4 > kBudget) {
            more = true;
            break;
        }
        rte_tel_data_add_array_string(list, e.c_str());
        used += e.size() + 4;
        n++;
        last = it->ip;
    }
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_u64(d, "total", rows->size());
    rte_tel_data_add_dict_container(d, "pods", list, 0);
    if (more) rte_tel_data_add_dict_string(d, "next", format_ip(last).c_str());
    return 0;
}

// /ztgeneve/xdp: the in-kernel counters of each attach: xdp link, {link: {port, to_ztgeneve,
// inbound, to_kernel, no_socket, deleted}} (deleted: times a link of that name was deleted under
// us).
int xdp_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_dict(d);
    for (const XdpLinkCounters& x : g_rt->xdp_counters()) {
        rte_tel_data* c = rte_tel_data_alloc();
        if (c == nullptr) return -ENOMEM;
        rte_tel_data_start_dict(c);
        rte_tel_data_add_dict_string(c, "port", x.port.c_str());
        rte_tel_data_add_dict_u64(c, "to_ztgeneve", x.to_ztgeneve);
        rte_tel_data_add_dict_u64(c, "inbound", x.inbound);
        rte_tel_data_add_dict_u64(c, "to_kernel", x.to_kernel);
        rte_tel_data_add_dict_u64(c, "no_socket", x.no_socket);
        rte_tel_data_add_dict_u64(c, "deleted", x.deleted);
        rte_tel_data_add_dict_container(d, x.link.c_str(), c, 0);
    }
    return 0;
}

} // namespace

void telemetry_attach(Runtime* rt) {
    static bool registered = false;
    {
        std::lock_guard lk(g_mu);
        g_rt = rt;
    }
    if (registered) return;
    registered = true;
    // Help texts hold at most RTE_TEL_MAX_STRING_LEN (128) bytes, or the command is refused.
    rte_telemetry_register_cmd("/ztgeneve/devices", devices_cb,
                               "Names of the devices (ports and twins)");
    rte_telemetry_register_cmd(
        "/ztgeneve/counters", counters_cb,
        "Counters of one device, summed over workers. Parameters: device name "
        "(none: the sum over all devices)");
    rte_telemetry_register_cmd("/ztgeneve/xdp", xdp_cb,
                               "In-kernel counters of each attach: xdp link (to_ztgeneve, "
                               "inbound, to_kernel, no_socket, deleted)");
    rte_telemetry_register_cmd("/ztgeneve/info", info_cb,
                               "Version, config file, role, workers, pods, mbufs, next hop");
    rte_telemetry_register_cmd(
        "/ztgeneve/pods", pods_cb,
        "Pods as '<ip> <device> <mac>' in address order. Parameters: the previous "
        "page's 'next' (none: the first page)");
}

void telemetry_detach() {
    std::lock_guard lk(g_mu);
    g_rt = nullptr;
}

} // namespace ztg
