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

} // namespace

std::vector<IptRule> mirror_iptables_rules(const KernelConfig& k) {
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

namespace {

RuleSpec rule_101() {
    return {kRulePrio, kMark, kMark, kTable};
}

std::vector<RouteSpec> table_101(const Config& c) {
    return {
        // ZT_IP dev <veth> scope link
        {kTable, c.tunnel.remote_ip, 32, Ip4{}, c.kernel.ztunnel_dev},
        // default via 192.168.127.2 dev istioout
        {kTable, Ip4{}, 0, c.kernel.istioout_peer, c.kernel.istioout},
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

PodDiff diff_pods(const Ip4Set& from, const Ip4Set& to) {
    PodDiff d;
    for (Ip4 ip : from)
        if (!to.count(ip)) d.remove.push_back(ip);
    for (Ip4 ip : to)
        if (!from.count(ip)) d.add.push_back(ip);
    return d;
}

std::vector<std::string> ipset_program_commands(const std::string& set,
                                                const std::vector<IpsetMember>& members,
                                                const Ip4Set& wanted) {
    Ip4Set ours, all;
    for (const auto& x : members) {
        all.insert(x.ip);
        if (x.comment == kIptComment) ours.insert(x.ip);
    }
    std::vector<std::string> cmds;
    for (Ip4 ip : ours)
        if (!wanted.count(ip)) cmds.push_back("del " + set + " " + format_ip(ip) + " -exist");
    for (Ip4 ip : wanted)
        if (!all.count(ip))
            cmds.push_back("add " + set + " " + format_ip(ip) + " comment \"" + kIptComment +
                           "\" -exist");
    return cmds;
}

std::vector<std::string> ipset_cleanup_commands(const std::string& set,
                                                const std::vector<IpsetMember>& members) {
    std::vector<std::string> cmds;
    size_t foreign = 0;
    for (const auto& x : members) {
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
    Ip4Set now;
    if (m->has_value())
        for (const auto& x : **m) now.insert(x.ip);
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
    current_ = std::move(now);
    return Ok{};
}

// Our members (comment "ztgeneve") follow wanted_; members someone else added stay.
Status KernelMirror::sync_ipset_program() {
    const std::string& set = cfg_.kernel.ipset;
    if (auto s = ipset_.run("create " + set + " hash:ip family inet comment -exist"); !s) return s;
    auto m = ipset_.members(set);
    if (!m) return err(m.error());
    const std::vector<IpsetMember> none;
    for (const std::string& cmd : ipset_program_commands(set, m->has_value() ? **m : none, wanted_))
        if (auto s = ipset_.run(cmd); !s) return s;
    // The dataplane follows ztgeneve's own pods only.
    bool changed = false;
    const PodDiff diff = diff_pods(current_, wanted_);
    for (Ip4 ip : diff.remove) changed |= sink_.del_pod(ip);
    for (Ip4 ip : diff.add) changed |= sink_.add_pod(ip);
    if (changed) sink_.pods_committed();
    current_ = wanted_;
    return Ok{};
}

Status KernelMirror::install_routing() {
    std::string errors;
    auto note = [&](Status s) {
        if (!s) errors += (errors.empty() ? "" : "; ") + s.error();
    };
    note(iptables_ensure(mirror_iptables_rules(cfg_.kernel)));
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

Status KernelMirror::set_pods(const std::vector<Ip4>& pods) {
    wanted_ = Ip4Set(pods.begin(), pods.end());
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
    note(iptables_remove(mirror_iptables_rules(cfg.kernel)));
    Ipset ipset;
    if (auto m = ipset.members(cfg.kernel.ipset); !m) {
        note(Status(err(m.error())));
    } else if (m->has_value()) {
        for (const std::string& cmd : ipset_cleanup_commands(cfg.kernel.ipset, **m))
            note(ipset.run(cmd));
    }
    if (!errors.empty()) return err(errors);
    return Ok{};
}

} // namespace ztg
