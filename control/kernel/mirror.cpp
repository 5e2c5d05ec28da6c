#include "control/kernel/mirror.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "control/kernel/iptables.hpp"
#include "control/kernel/reference.hpp"

namespace ztg {

PodDiff diff_pods(const Ip4Set& from, const Ip4Set& to) {
    PodDiff d;
    for (Ip4 ip : from)
        if (!to.count(ip)) d.remove.push_back(ip);
    for (Ip4 ip : to)
        if (!from.count(ip)) d.add.push_back(ip);
    return d;
}

Status ipset_adoptable(const std::string& set, const IpsetHeader& h) {
    if (h.type == "hash:ip" && h.family == "inet") return Ok{};
    return err("ipset " + set + " exists as " + h.type + " family " + h.family +
               ", not hash:ip family inet: ztgeneve cannot keep its pods in it (the kernel "
               "rule matches the pods' source addresses); destroy it or set kernel.ipset to "
               "another name");
}

std::vector<std::string> ipset_program_commands(const std::string& set,
                                                const std::vector<IpsetMember>& members,
                                                const Ip4Set& wanted, bool comments,
                                                const Ip4Set& owned) {
    Ip4Set ours, all;
    for (const auto& x : members) {
        all.insert(x.ip);
        if (comments ? x.comment == kIptComment : owned.count(x.ip) != 0) ours.insert(x.ip);
    }
    const std::string comment = comments ? std::string(" comment \"") + kIptComment + "\"" : "";
    std::vector<std::string> cmds;
    for (Ip4 ip : ours)
        if (!wanted.count(ip)) cmds.push_back("del " + set + " " + format_ip(ip) + " -exist");
    for (Ip4 ip : wanted)
        if (!all.count(ip))
            cmds.push_back("add " + set + " " + format_ip(ip) + comment + " -exist");
    return cmds;
}

std::vector<std::string> ipset_cleanup_commands(const std::string& set, const IpsetContent& now,
                                                const std::vector<Ip4>& pods) {
    std::vector<std::string> cmds;
    if (!now.header.comment) { // not created by ztgeneve: take the config's pods out, keep it
        const Ip4Set ours(pods.begin(), pods.end());
        for (const auto& x : now.members)
            if (ours.count(x.ip)) cmds.push_back("del " + set + " " + format_ip(x.ip) + " -exist");
        return cmds;
    }
    size_t foreign = 0;
    for (const auto& x : now.members) {
        if (x.comment == kIptComment)
            cmds.push_back("del " + set + " " + format_ip(x.ip) + " -exist");
        else
            foreign++;
    }
    // Destroy the set only when nothing of anyone else's is left in it (and nothing
    // refers to it: the kernel refuses otherwise, which the caller reports).
    if (foreign == 0) cmds.push_back("destroy " + set);
    return cmds;
}

KernelMirror::KernelMirror(const Config& cfg, PodSink& sink) : cfg_(cfg), sink_(sink) {
    for (Ip4 ip : cfg.pods) wanted_.insert(ip);
}

KernelMirror::~KernelMirror() = default;

Status KernelMirror::start() {
    if (!rtnl_.ok()) return err("kernel: cannot open a NETLINK_ROUTE socket");
    watch_ = std::make_unique<RtnlWatch>();
    if (!watch_->ok()) return err("kernel: cannot subscribe to rule/route/link notifications");
    if (cfg_.kernel.mode == KernelMode::Observe) { // a failed read is retried every poll_ms
        if (auto s = synced(sync_ipset_observe()); !s) spdlog::error("kernel: {}", s.error());
        check_routing();
        return Ok{};
    }
    std::vector<std::string> errors = install();
    // A set ztgeneve cannot use means no pod is redirected by the kernel path: stop.
    if (ipset_refused_) return err(errors.front());
    report_errors(errors, true);
    next_assert_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    return Ok{};
}

void KernelMirror::report_errors(const std::vector<std::string>& errors, bool always) {
    for (const std::string& e : errors) // each once while it lasts
        if (always || std::find(last_errors_.begin(), last_errors_.end(), e) == last_errors_.end())
            spdlog::error("kernel: {}", e);
    last_errors_ = errors;
}

// ipset has no change notifications: read it whole, apply the difference.
Status KernelMirror::sync_ipset_observe() {
    auto m = ipset_.read(cfg_.kernel.ipset);
    if (!m) return err(m.error());
    Ip4Set now;
    if (m->has_value())
        for (const auto& x : (*m)->members) now.insert(x.ip);
    else if (last_ipset_error_ != "missing") {
        spdlog::warn("kernel: ipset {} does not exist: no pods are redirected until it does",
                     cfg_.kernel.ipset);
        last_ipset_error_ = "missing";
    }
    if (m->has_value()) last_ipset_error_.clear();
    size_t added = 0, removed = 0;
    const PodDiff diff = diff_pods(current_, now);
    for (Ip4 ip : diff.remove)
        if (sink_.del_pod(ip)) removed++;
    for (Ip4 ip : diff.add) {
        if (sink_.add_pod(ip))
            added++;
        else
            spdlog::error(
                "kernel: pod {} from ipset {} does not fit the pod table (limits.pods {})",
                format_ip(ip), cfg_.kernel.ipset, cfg_.pod_capacity);
    }
    if (added + removed != 0) {
        sink_.pods_committed();
        spdlog::info("kernel: ipset {}: {} pods added, {} removed, {} in all", cfg_.kernel.ipset,
                     added, removed, now.size());
    }
    const bool changed = now != current_;
    current_ = std::move(now);
    if (changed) check_routing(); // table 100 follows the members
    return Ok{};
}

// The dataplane follows ztgeneve's pods first (they are the truth, whatever the kernel
// says), then our members of the set do; members someone else added stay.
Status KernelMirror::sync_ipset_program() {
    bool changed = false;
    const PodDiff diff = diff_pods(current_, wanted_);
    for (Ip4 ip : diff.remove) changed |= sink_.del_pod(ip);
    for (Ip4 ip : diff.add) changed |= sink_.add_pod(ip);
    if (changed) sink_.pods_committed();
    current_ = wanted_;
    const std::string& set = cfg_.kernel.ipset;
    auto m = ipset_.read(set);
    if (!m) return err(m.error());
    IpsetContent now;
    if (!m->has_value()) {
        if (auto s = ipset_.run("create " + set + " hash:ip family inet comment -exist"); !s)
            return s;
        now.header = {"hash:ip", "inet", true};
    } else {
        now = std::move(**m);
        ipset_refused_ = false;
        if (auto s = ipset_adoptable(set, now.header); !s) {
            ipset_refused_ = true;
            return s;
        }
        if (!now.header.comment && !said_no_comment_) {
            spdlog::warn("kernel: ipset {} exists without comment support: adopted; ztgeneve adds "
                         "its pods to it without comment and takes out only pods it no longer "
                         "has (--cleanup: the config's pods), never the set",
                         set);
            said_no_comment_ = true;
        }
    }
    for (const std::string& cmd :
         ipset_program_commands(set, now.members, wanted_, now.header.comment, owned_))
        if (auto s = ipset_.run(cmd); !s) return s;
    owned_ = wanted_;
    return Ok{};
}

std::vector<std::string> KernelMirror::install() {
    std::vector<std::string> errors;
    auto note = [&](Status s) {
        if (!s) errors.push_back(s.error());
    };
    note(synced(sync_ipset_program()));
    if (ipset_refused_) return errors;
    note(iptables_ensure(reference_iptables(cfg_)));
    for (const RuleSpec& r : reference_rules()) note(rtnl_.ensure_rule(r));
    for (const GeneveSpec& g : reference_links(cfg_)) note(rtnl_.ensure_geneve(g));
    sync_routes(errors);
    return errors;
}

// Tables 100-102 as the reference has them for wanted_: one batch from one read. A route
// whose link is missing is not attempted; each kind of them gets one error.
void KernelMirror::sync_routes(std::vector<std::string>& errors) {
    std::vector<Rtnl::Route> have;
    for (uint32_t t : kReferenceTables) {
        auto r = rtnl_.routes(t);
        if (!r) {
            errors.push_back(r.error());
            return;
        }
        have.insert(have.end(), r->begin(), r->end());
    }
    const RoutePlan plan = plan_routes(have, reference_routes(cfg_, wanted_));
    errors.insert(errors.end(), plan.conflicts.begin(), plan.conflicts.end());
    for (const RouteSpec& r : plan.remove)
        if (auto s = rtnl_.remove_route(r); !s) errors.push_back(s.error());
    std::map<std::string, bool> link;
    std::map<std::pair<uint32_t, std::string>, std::vector<const RouteSpec*>> unroutable;
    for (const RouteSpec& r : plan.add) {
        auto [it, fresh] = link.try_emplace(r.dev, false);
        if (fresh) it->second = rtnl_.ifindex(r.dev).has_value();
        if (!it->second)
            unroutable[{r.table, r.dev}].push_back(&r);
        else if (auto s = rtnl_.add_route(r); !s)
            errors.push_back(s.error());
    }
    for (const auto& [key, routes] : unroutable)
        errors.push_back(route_text(*routes.front()) +
                         (routes.size() > 1
                              ? " (and " + std::to_string(routes.size() - 1) + " more like it)"
                              : "") +
                         ": not installed: link " + key.second + " does not exist");
}

void KernelMirror::check_routing() {
    KernelListing have;
    if (auto rules = rtnl_.rules())
        for (const auto& r : *rules) have.rules.push_back(r.spec);
    for (uint32_t t : kReferenceTables)
        if (auto routes = rtnl_.routes(t))
            for (const auto& r : *routes) have.routes.push_back(r.spec);
    for (const char* table : {"mangle", "nat"})
        if (auto text = iptables_save(table)) have.iptables[table] = parse_iptables_save(*text);
    for (const GeneveSpec& g : reference_links(cfg_))
        if (auto l = rtnl_.link_info(g.name)) have.links[g.name] = *l;
    const Findings f = compare_with_reference(cfg_, current_, have);
    present_ = f.present.size();
    missing_ = f.missing.size();
    different_ = f.different.size();
    std::string d;
    for (const auto& x : f.missing) d += "missing " + x + "\n";
    for (const auto& x : f.different) d += "different " + x + "\n";
    if (d == last_disagreement_) return;
    last_disagreement_ = d;
    const size_t all = present_ + missing_ + different_;
    if (d.empty()) {
        spdlog::info("kernel: observe: all {} objects of the reference configuration are present",
                     all);
        return;
    }
    spdlog::warn("kernel: observe: the kernel differs from the reference configuration: {} of {} "
                 "objects present, {} missing, {} different",
                 present_, all, missing_, different_);
    constexpr size_t kMaxLines = 50; // the fixed objects and a few pods' routes
    size_t n = 0;
    for (const auto* list : {&f.missing, &f.different})
        for (const auto& x : *list) {
            if (n++ == kMaxLines) break;
            spdlog::warn("kernel: observe: {} {}", list == &f.missing ? "missing" : "different", x);
        }
    if (n > kMaxLines)
        spdlog::warn("kernel: observe: ... and {} more", missing_ + different_ - kMaxLines);
}

void KernelMirror::poll() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_poll_) return;
    next_poll_ = now + std::chrono::milliseconds(cfg_.kernel.poll_ms);
    const uint64_t overflows = watch_ ? watch_->overflows() : 0;
    const bool routing_changed = watch_ && watch_->changed();
    if (routing_changed) resyncs_++;
    if (watch_ && watch_->overflows() != overflows)
        spdlog::warn("kernel: netlink notifications overflowed (ENOBUFS): re-reading rules, routes "
                     "and links");
    if (cfg_.kernel.mode == KernelMode::Observe) {
        if (auto s = synced(sync_ipset_observe()); !s && s.error() != last_ipset_error_) {
            spdlog::error("kernel: {}", s.error());
            last_ipset_error_ = s.error();
        }
        if (routing_changed || now >= next_assert_) { // iptables sends no notifications
            next_assert_ = now + std::chrono::seconds(5);
            check_routing();
        }
        return;
    }
    // program: put back what someone removed (on notification, and every few seconds
    // for the ipset and iptables, which send none).
    if (routing_changed || now >= next_assert_) {
        next_assert_ = now + std::chrono::seconds(5);
        report_errors(install(), false);
    }
}

Status KernelMirror::synced(Status s) {
    if (s)
        last_sync_ = std::chrono::steady_clock::now();
    else
        sync_errors_++;
    return s;
}

Status KernelMirror::set_pods(const std::vector<Ip4>& pods) {
    wanted_ = Ip4Set(pods.begin(), pods.end());
    report_errors(install(), false); // the ipset and table 100 follow the pods
    return Ok{};
}

Status KernelMirror::cleanup(const Config& cfg) {
    std::string errors;
    auto note = [&](Status s) {
        if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
    };
    Rtnl rtnl;
    if (!rtnl.ok()) return err("kernel: cannot open a NETLINK_ROUTE socket");
    // Every route of ours in the reference's tables, whatever pods they were for.
    for (uint32_t t : kReferenceTables) {
        auto routes = rtnl.routes(t);
        if (!routes) {
            note(Status(err(routes.error())));
            continue;
        }
        for (const auto& r : *routes)
            if (r.ours) note(rtnl.remove_route(r.spec));
    }
    for (const RuleSpec& r : reference_rules()) note(rtnl.remove_rule(r));
    for (const GeneveSpec& g : reference_links(cfg))
        if (auto link = rtnl.link_info(g.name);
            link && link->kind == "geneve" && link->vni == g.vni && link->remote == g.remote)
            note(rtnl.remove_link(g.name));
    note(iptables_remove(reference_iptables(cfg, true)));
    Ipset ipset;
    if (auto m = ipset.read(cfg.kernel.ipset); !m) {
        note(Status(err(m.error())));
    } else if (m->has_value()) {
        for (const std::string& cmd : ipset_cleanup_commands(cfg.kernel.ipset, **m, cfg.pods))
            note(ipset.run(cmd));
    }
    if (!errors.empty()) return err(errors);
    return Ok{};
}

} // namespace ztg
