#include "control/kernel/mirror.hpp"

#include <spdlog/spdlog.h>

#include "control/kernel/iptables.hpp"

namespace ztg {

namespace {

constexpr uint32_t kMark = 0x100;   // ztunnel's outbound mark (0x100/0x100)
constexpr uint32_t kTable = 101;    // the outbound routing table
constexpr uint32_t kRulePrio = 101; // ip rule 101: from all fwmark 0x100/0x100 lookup 101

char hexbuf[16];
const char* hex(uint32_t v) {
    std::snprintf(hexbuf, sizeof hexbuf, "0x%x", v);
    return hexbuf;
}

std::vector<IptRule> iptables_rules(const KernelConfig& k) {
    const std::string mark = std::string(hex(kMark)) + "/" + hex(kMark);
    return {
        {"mangle", "ztunnel-PREROUTING", "-p tcp -m set --match-set " + k.ipset + " src",
         "MARK --set-xmark " + mark, false},
        {"mangle", "PREROUTING", "", "ztunnel-PREROUTING", true},
        {"nat", "ztunnel-PREROUTING", "-m mark --mark " + mark, "ACCEPT", false},
        {"nat", "ztunnel-POSTROUTING", "-m mark --mark " + mark, "ACCEPT", false},
        {"nat", "PREROUTING", "", "ztunnel-PREROUTING", true},
        {"nat", "POSTROUTING", "", "ztunnel-POSTROUTING", true},
    };
}

RuleSpec rule_101() {
    return {kRulePrio, kMark, kMark, kTable};
}

std::vector<RouteSpec> table_101(const Config& c) {
    return {
        {kTable, c.tunnel.remote_ip, 32, 0, c.kernel.ztunnel_dev}, // ZT_IP dev <veth> scope link
        {kTable, 0, 0, c.kernel.istioout_peer,
         c.kernel.istioout}, // default via 192.168.127.2 dev istioout
    };
}

GeneveSpec istioout(const Config& c) {
    GeneveSpec g;
    g.name = c.kernel.istioout;
    g.vni = c.tunnel.vni;
    g.remote = c.tunnel.remote_ip;
    g.port = c.tunnel.udp_port;
    g.address = c.tunnel.inner_ip;
    g.prefix = 30;
    g.mtu = uint16_t(c.tunnel.mtu - 50);
    return g;
}

} // namespace

KernelMirror::KernelMirror(const Config& cfg, PodSink& sink) : cfg_(cfg), sink_(sink) {
    for (uint32_t ip : cfg.pods) wanted_.insert(ip);
}

KernelMirror::~KernelMirror() = default;

Status KernelMirror::start() {
    if (!rtnl_.ok()) return err("kernel: cannot open a NETLINK_ROUTE socket");
    watch_ = std::make_unique<RtnlWatch>();
    if (!watch_->ok()) return err("kernel: cannot subscribe to rule/route/link notifications");
    if (cfg_.kernel.mode == KernelMode::Observe) {
        auto s = synced(sync_ipset_observe());
        check_routing();
        return s;
    }
    std::string errors;
    for (Status s : {synced(sync_ipset_program()), install_routing()})
        if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
    last_disagreement_ = errors; // reported once by the caller, not again by poll()
    next_assert_ = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    if (!errors.empty()) return err(errors);
    return Ok{};
}

// ipset has no change notifications: read it whole, apply the difference.
Status KernelMirror::sync_ipset_observe() {
    auto m = ipset_.members(cfg_.kernel.ipset);
    if (!m) return err(m.error());
    std::set<uint32_t> now;
    if (m->has_value())
        for (const auto& x : **m) now.insert(x.ip);
    else if (last_ipset_error_ != "missing") {
        spdlog::warn("kernel: ipset {} does not exist: no pods are redirected until it does",
                     cfg_.kernel.ipset);
        last_ipset_error_ = "missing";
    }
    if (m->has_value()) last_ipset_error_.clear();
    size_t added = 0, removed = 0;
    for (uint32_t ip : current_)
        if (!now.count(ip) && sink_.del_pod(ip)) removed++;
    for (uint32_t ip : now)
        if (!current_.count(ip)) {
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
    current_ = std::move(now);
    return Ok{};
}

// Our members (comment "ztgeneve") follow wanted_; members someone else added stay.
Status KernelMirror::sync_ipset_program() {
    const std::string& set = cfg_.kernel.ipset;
    if (auto s = ipset_.run("create " + set + " hash:ip family inet comment -exist"); !s) return s;
    auto m = ipset_.members(set);
    if (!m) return err(m.error());
    std::set<uint32_t> ours, all;
    if (m->has_value())
        for (const auto& x : **m) {
            all.insert(x.ip);
            if (x.comment == kIptComment) ours.insert(x.ip);
        }
    for (uint32_t ip : ours)
        if (!wanted_.count(ip))
            if (auto s = ipset_.run("del " + set + " " + format_ip(ip) + " -exist"); !s) return s;
    for (uint32_t ip : wanted_)
        if (!all.count(ip))
            if (auto s = ipset_.run("add " + set + " " + format_ip(ip) + " comment \"" +
                                    kIptComment + "\" -exist");
                !s)
                return s;
    // The dataplane follows ztgeneve's own pods only.
    bool changed = false;
    for (uint32_t ip : current_)
        if (!wanted_.count(ip)) changed |= sink_.del_pod(ip);
    for (uint32_t ip : wanted_)
        if (!current_.count(ip)) changed |= sink_.add_pod(ip);
    if (changed) sink_.pods_committed();
    current_ = wanted_;
    return Ok{};
}

Status KernelMirror::install_routing() {
    std::string errors;
    auto note = [&](Status s) {
        if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
    };
    note(iptables_ensure(iptables_rules(cfg_.kernel)));
    note(rtnl_.ensure_rule(rule_101()));
    const auto routes = table_101(cfg_);
    note(rtnl_.ensure_route(routes[0]));
    // The default route needs istioout, which needs the geneve module.
    if (auto g = rtnl_.ensure_geneve(istioout(cfg_)); !g)
        note(Status(err(g.error() + " (table " + std::to_string(kTable) +
                        "'s default route via it is not installed either)")));
    else
        note(rtnl_.ensure_route(routes[1]));
    if (!errors.empty()) return err(errors);
    return Ok{};
}

void KernelMirror::check_routing() {
    std::string d;
    auto rules = rtnl_.rules();
    bool rule = false;
    if (rules)
        for (const auto& r : *rules) rule |= r.spec == rule_101();
    if (!rule) d += "no `ip rule 101 fwmark 0x100/0x100 lookup 101`; ";
    if (auto link = rtnl_.link_info(cfg_.kernel.istioout)) {
        if (link->kind != "geneve")
            d += cfg_.kernel.istioout + " is not a geneve device; ";
        else {
            if (link->vni != cfg_.tunnel.vni)
                d += cfg_.kernel.istioout + " has vni " + std::to_string(link->vni) + ", we use " +
                     std::to_string(cfg_.tunnel.vni) + "; ";
            if (link->remote != cfg_.tunnel.remote_ip)
                d += cfg_.kernel.istioout + " has remote " + format_ip(link->remote) + ", we use " +
                     format_ip(cfg_.tunnel.remote_ip) + "; ";
            if (link->port != cfg_.tunnel.udp_port)
                d += cfg_.kernel.istioout + " has dstport " + std::to_string(link->port) +
                     ", we use " + std::to_string(cfg_.tunnel.udp_port) + "; ";
        }
    } else {
        d += "no link " + cfg_.kernel.istioout + "; ";
    }
    if (auto routes = rtnl_.routes(kTable)) {
        bool zt = false;
        for (const auto& r : *routes)
            zt |= r.spec.dst == cfg_.tunnel.remote_ip && r.spec.dst_len == 32;
        if (!zt) d += "table 101 has no route to " + format_ip(cfg_.tunnel.remote_ip) + "; ";
    }
    if (d != last_disagreement_) {
        if (d.empty())
            spdlog::info("kernel: rule 101, table 101 and {} agree with the tunnel config",
                         cfg_.kernel.istioout);
        else
            spdlog::warn("kernel disagrees with the tunnel config: {}", d.substr(0, d.size() - 2));
        last_disagreement_ = d;
    }
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
        if (routing_changed) check_routing();
        return;
    }
    // program: put back what someone removed (on notification, and every few seconds
    // for the ipset and iptables, which send none).
    if (routing_changed || now >= next_assert_) {
        next_assert_ = now + std::chrono::seconds(5);
        std::string errors;
        for (Status s : {synced(sync_ipset_program()), install_routing()})
            if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
        if (errors != last_disagreement_ && !errors.empty()) spdlog::warn("kernel: {}", errors);
        last_disagreement_ = errors;
    }
}

Status KernelMirror::synced(Status s) {
    if (s)
        last_sync_ = std::chrono::steady_clock::now();
    else
        sync_errors_++;
    return s;
}

Status KernelMirror::set_pods(const std::vector<uint32_t>& pods) {
    wanted_ = std::set<uint32_t>(pods.begin(), pods.end());
    return synced(sync_ipset_program());
}

Status KernelMirror::cleanup(const Config& cfg) {
    std::string errors;
    auto note = [&](Status s) {
        if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
    };
    Rtnl rtnl;
    if (!rtnl.ok()) return err("kernel: cannot open a NETLINK_ROUTE socket");
    for (const auto& r : table_101(cfg)) note(rtnl.remove_route(r));
    note(rtnl.remove_rule(rule_101()));
    if (auto link = rtnl.link_info(cfg.kernel.istioout); link && link->kind == "geneve" &&
                                                         link->vni == cfg.tunnel.vni &&
                                                         link->remote == cfg.tunnel.remote_ip)
        note(rtnl.remove_link(cfg.kernel.istioout));
    note(iptables_remove(iptables_rules(cfg.kernel)));
    Ipset ipset;
    if (auto m = ipset.members(cfg.kernel.ipset); !m) {
        note(Status(err(m.error())));
    } else if (m->has_value()) {
        size_t foreign = 0;
        for (const auto& x : **m) {
            if (x.comment == kIptComment)
                note(ipset.run("del " + cfg.kernel.ipset + " " + format_ip(x.ip) + " -exist"));
            else
                foreign++;
        }
        // Destroy the set only when nothing of anyone else's is left in it (and nothing
        // refers to it: the kernel refuses otherwise, which we report).
        if (foreign == 0) note(ipset.run("destroy " + cfg.kernel.ipset));
    }
    if (!errors.empty()) return err(errors);
    return Ok{};
}

} // namespace ztg
