// /ztgeneve/devices, /ztgeneve/counters,<device> and /ztgeneve/info on DPDK's telemetry socket
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

int info_cb(const char*, const char*, rte_tel_data* d) {
    std::lock_guard lk(g_mu);
    if (g_rt == nullptr) return -1;
    rte_tel_data_start_dict(d);
    rte_tel_data_add_dict_string(d, "version", ZTG_VERSION);
    rte_tel_data_add_dict_string(d, "config", g_rt->config().source.c_str());
    rte_tel_data_add_dict_u64(d, "workers", g_rt->config().dpdk.workers);
    rte_tel_data_add_dict_u64(d, "pods", g_rt->pod_count());
    rte_tel_data_add_dict_u64(d, "mbufs_in_use", g_rt->mbufs_in_use());
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
    rte_telemetry_register_cmd("/ztgeneve/devices", devices_cb,
                               "Names of the devices (ports and twins)");
    rte_telemetry_register_cmd(
        "/ztgeneve/counters", counters_cb,
        "Counters of one device, summed over workers. Parameters: device name "
        "(none: the sum over all devices)");
    rte_telemetry_register_cmd("/ztgeneve/info", info_cb,
                               "Version, config file, workers, pod count");
}

void telemetry_detach() {
    std::lock_guard lk(g_mu);
    g_rt = nullptr;
}

} // namespace ztg
