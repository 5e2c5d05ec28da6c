#include "control/health.hpp"

#include "control/runtime.hpp"

namespace ztg {

Health::Health(Runtime& rt) : rt_(rt) {
    const auto now = std::chrono::steady_clock::now();
    workers_.assign(rt.worker_count(), Beat{0, now});
    for (size_t w = 0; w < workers_.size(); w++) workers_[w].last = rt.worker_rounds(w);
    control_ = {rt.inbox().rounds(), now};
}

void Health::sample() {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard g(mu_);
    auto beat = [&](Beat& b, uint64_t v) {
        if (v != b.last) b = {v, now};
    };
    for (size_t w = 0; w < workers_.size(); w++) beat(workers_[w], rt_.worker_rounds(w));
    beat(control_, rt_.inbox().rounds());
}

Check Health::live() const {
    Check c;
    const auto now = std::chrono::steady_clock::now();
    auto ms = [&](const Beat& b) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(now - b.when).count();
    };
    std::lock_guard g(mu_);
    for (size_t w = 0; w < workers_.size(); w++)
        if (now - workers_[w].when > kWorkerStall)
            c.reasons.push_back("worker " + std::to_string(w) + " stalled: no poll round for " +
                                std::to_string(ms(workers_[w])) + " ms");
    if (now - control_.when > kControlStall)
        c.reasons.push_back("control thread stalled: no loop round for " +
                            std::to_string(ms(control_)) + " ms");
    c.ok = c.reasons.empty();
    return c;
}

Check Health::ready() const {
    Check c = live();
    // On the control thread: the config it reads may be replaced by a reload there.
    Runtime* rt = &rt_;
    auto why = rt_.inbox().ask([rt] {
        std::vector<std::string> r;
        const ControlStatus st = rt->control_status();
        const auto& devs = rt->devices();
        for (size_t d = 0; d < st.link_up.size() && d < devs.size(); d++)
            if (st.is_port[d] && !st.link_up[d])
                r.push_back("port " + devs[d].name + ": link down");
        if (!st.nexthop_known)
            r.push_back("tunnel next hop " + format_ip(rt->config().tunnel.remote_ip) +
                        " not resolved (no ARP reply yet)");
        if (st.kernel_mirror && !st.kernel_synced)
            r.push_back("kernel: first sync of ipset " + rt->config().kernel.ipset + " not done");
        return r;
    });
    if (!why)
        c.reasons.push_back("control thread did not answer within 1 s");
    else
        c.reasons.insert(c.reasons.end(), why->begin(), why->end());
    c.ok = c.reasons.empty();
    return c;
}

} // namespace ztg
