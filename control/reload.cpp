#include "control/reload.hpp"

#include <spdlog/spdlog.h>

#include "control/runtime.hpp"

namespace ztg {

namespace {

// Whole sections compared with their defaulted ==, so a key added later cannot slip
// through as "changeable" without being applied.
std::string first_difference(const Config& a, const Config& b) {
    if (a.role != b.role) return "role";
    if (a.ports.size() != b.ports.size()) return "ports";
    for (size_t i = 0; i < a.ports.size(); i++)
        if (!(a.ports[i] == b.ports[i])) return "ports[" + std::to_string(i) + "]";
    if (!(a.tunnel == b.tunnel)) return "tunnel";
    if (a.protocols != b.protocols) return "redirect.protocols";
    // The flow table is allocated and the inbound templates built at start: a reload that
    // turned inbound on would leave the workers without a table.
    if (!(a.inbound == b.inbound)) return "inbound";
    if (a.pod_capacity != b.pod_capacity) return "limits.pods";
    if (!(a.kernel == b.kernel)) return "kernel";
    if (!(a.dpdk == b.dpdk)) return "dpdk";
    if (!(a.metrics == b.metrics)) return "metrics";
    return "";
}

} // namespace

ReloadPlan plan_reload(const Config& running, const Config& next) {
    ReloadPlan plan;
    // Everything but pods, log.level and kernel.poll_ms must be as it was.
    Config cmp = next;
    cmp.pods = running.pods;
    cmp.log_level = running.log_level;
    cmp.kernel.poll_ms = running.kernel.poll_ms;
    plan.refused = first_difference(cmp, running);
    if (!plan.refused.empty()) return plan;
    plan.pods = diff_pods(Ip4Set(running.pods.begin(), running.pods.end()),
                          Ip4Set(next.pods.begin(), next.pods.end()));
    return plan;
}

Status Runtime::reload() {
    auto next = load_config(cfg_.source);
    if (!next) return err(next.error());
    Config& n = *next;
    const ReloadPlan plan = plan_reload(cfg_, n);
    if (!plan.refused.empty())
        return err(cfg_.source + ": " + plan.refused +
                   " cannot change while running (restart ztgeneve); nothing was applied");
    // Pods: the difference, as one batch. In observe mode the ipset is the truth.
    size_t added = 0, removed = 0;
    if (cfg_.kernel.mode != KernelMode::Observe) {
        for (Ip4 ip : plan.pods.remove) removed += del_pod(ip);
        for (Ip4 ip : plan.pods.add) {
            if (!add_pod(ip))
                return err("pods: " + format_ip(ip) + " does not fit the pod table (limits.pods)");
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

} // namespace ztg
