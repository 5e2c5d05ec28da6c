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
    Runtime* rt = &rt_;
    const auto st = rt_.inbox().ask([rt] { return rt->control_status(); });
    if (!st) {
        c.reasons.push_back("control thread did not answer within 1 s");
    } else {
        const auto& devs = rt_.devices();
        for (size_t d = 0; d < st->link_up.size() && d < devs.size(); d++)
            if (st->is_port[d] && !st->link_up[d])
                c.reasons.push_back("port " + devs[d].name + ": link down");
        if (!st->nexthop_known)
            c.reasons.push_back("tunnel next hop " + format_ip(rt_.config().tunnel.remote_ip) +
                                " not resolved (no ARP reply yet)");
        if (st->kernel_mirror && !st->kernel_synced)
            c.reasons.push_back("kernel: first sync of ipset " + rt_.config().kernel.ipset +
                                " not done");
    }
    c.ok = c.reasons.empty();
    return c;
}

} // namespace ztg
