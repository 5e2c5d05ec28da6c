// /ztgeneve/counters and /ztgeneve/info on DPDK's telemetry socket
// (/var/run/dpdk/<file-prefix>/dpdk_telemetry.v2), next to DPDK's own /ethdev/stats.
// Callbacks run on DPDK's telemetry thread; they only read atomics, under a mutex that
// keeps the runtime alive while they do.
#include <rte_telemetry.h>

#include <mutex>

#include "control/runtime.hpp"

namespace ztg {

namespace {

std::mutex g_mu;
Runtime* g_rt = nullptr; // guarded by g_mu

int counters_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_dict(d);
    const auto& devs = g_rt->devices();
    for (size_t i = 0; i < devs.size(); i++) {
        rte_tel_data* c = rte_tel_data_alloc();
        if (c == nullptr) return -1;
        rte_tel_data_start_dict(c);
        for (size_t k = 0; k < kNumCtr; k++) rte_tel_data_add_dict_u64(c, kCtrName[k], g_rt->counter(i, Ctr(k)));
        rte_tel_data_add_dict_container(d, devs[i].name.c_str(), c, 0);
    }
    return 0;
}

int info_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_string(d, "version", ZTG_VERSION);
    rte_tel_data_add_dict_string(d, "config", g_rt->config().source.c_str());
    rte_tel_data_add_dict_u64(d, "workers", g_rt->config().dpdk.workers);
    rte_tel_data_add_dict_u64(d, "pods", g_rt->pod_count());
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
    rte_telemetry_register_cmd("/ztgeneve/counters", counters_cb,
                               "Counters per device, summed over workers. Takes no parameters");
    rte_telemetry_register_cmd("/ztgeneve/info", info_cb, "Version, config file, workers, pod count");
}

void telemetry_detach() {
    std::lock_guard lk(g_mu);
    g_rt = nullptr;
}

} // namespace ztg
