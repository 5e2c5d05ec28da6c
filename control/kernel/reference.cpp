#include "control/kernel/reference.hpp"

#include <algorithm>
#include <tuple>

namespace ztg {

namespace {

std::string hex(uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%x", v);
    return b;
}
std::string masked(uint32_t v) {
    return hex(v) + "/" + hex(v);
}
std::string set_mark(uint32_t v) {
    return "MARK --set-xmark " + masked(v);
}
std::string save_mark(uint32_t v) {
    return "CONNMARK --save-mark --nfmask " + hex(v) + " --ctmask " + hex(v);
}
std::string has_mark(uint32_t v) {
    return "-m mark --mark " + masked(v);
}

// Where a route is: its table and destination (one route per place in our tables). An
// index by place keeps the plans linear in the number of pods.
using Place = std::tuple<uint32_t, uint32_t, uint8_t>;
Place place(const RouteSpec& r) {
    return {r.table, r.dst.raw, r.dst_len};
}
template <class T, class Spec>
std::map<Place, const T*> by_place(const std::vector<T>& v, Spec spec) {
    std::map<Place, const T*> m;
    for (const T& x : v) m.emplace(place(spec(x)), &x);
    return m;
}

} // namespace

std::vector<IptRule> reference_iptables(const Config& c, bool all) {
    const std::string in = c.kernel.istioin, out = c.kernel.istioout, zv = c.kernel.ztunnel_dev;
    const std::string zt = format_ip(c.tunnel.remote_ip), host = format_ip(c.tunnel.local_ip);
    const std::string pre = "ztunnel-PREROUTING";
    auto m = [](const std::string& chain, std::string match, std::string target) {
        return IptRule{"mangle", chain, std::move(match), std::move(target), false};
    };
    std::vector<IptRule> r = {
        {"mangle", "PREROUTING", "", pre, true},
        {"mangle", "FORWARD", "", "ztunnel-FORWARD", true},
        {"mangle", "INPUT", "", "ztunnel-INPUT", true},
        {"mangle", "OUTPUT", "", "ztunnel-OUTPUT", true},
        m(pre, "-i " + in, set_mark(kMarkSkip)),
        m(pre, "-i " + in, "RETURN"),
        m(pre, "-i " + out, set_mark(kMarkSkip)),
        m(pre, "-i " + out, "RETURN"),
        m(pre, "-p udp -m udp --dport " + std::to_string(c.tunnel.udp_port), "RETURN"),
        m(pre, "-m connmark --mark " + masked(kMarkConnSkip), set_mark(kMarkSkip)),
        m(pre, has_mark(kMarkSkip), "RETURN"),
        m(pre, "! -i " + zv + " -m connmark --mark " + masked(kMarkProxy),
          set_mark(kMarkProxyReturn)),
        m(pre, has_mark(kMarkProxyReturn), "RETURN"),
        m(pre, "! -s " + zt + "/32 -i " + zv, set_mark(kMarkProxy)),
        m(pre, has_mark(kMarkSkip), "RETURN"),
        m(pre, "-i " + zv, set_mark(kMarkConnSkip)),
        m(pre, "-p udp", set_mark(kMarkConnSkip)),
        m(pre, has_mark(kMarkSkip), "RETURN"),
        m(pre, "-p tcp -m set --match-set " + c.kernel.ipset + " src", set_mark(kMarkOutbound)),
        m("ztunnel-FORWARD", has_mark(kMarkConnSkip), save_mark(kMarkConnSkip)),
        m("ztunnel-FORWARD", has_mark(kMarkProxy), save_mark(kMarkProxy)),
        m("ztunnel-INPUT", has_mark(kMarkConnSkip), save_mark(kMarkConnSkip)),
        m("ztunnel-INPUT", has_mark(kMarkProxy), save_mark(kMarkProxy)),
        m("ztunnel-OUTPUT", "-s " + host + "/32",
          "MARK --set-xmark " + hex(kMarkConnSkip) + "/0xffffffff"),
        {"nat", "PREROUTING", "", pre, true},
        {"nat", "POSTROUTING", "", "ztunnel-POSTROUTING", true},
        {"nat", pre, has_mark(kMarkOutbound), "ACCEPT", false},
        {"nat", "ztunnel-POSTROUTING", has_mark(kMarkOutbound), "ACCEPT", false},
    };
    if (c.kernel.dns_capture || all)
        r.push_back({"nat", pre,
                     "-p udp -m set --match-set " + c.kernel.ipset + " src -m udp --dport 53",
                     "DNAT --to-destination " + zt + ":" + std::to_string(kDnsCapturePort), false});
    return r;
}

std::vector<RuleSpec> reference_rules() {
    return {
        {100, kMarkSkip, kMarkSkip, 0, 32766},
        {101, kMarkOutbound, kMarkOutbound, kTableOutbound, 0},
        {102, kMarkProxyReturn, kMarkProxyReturn, kTableProxyReturn, 0},
        {103, 0, 0, kTableInbound, 0},
    };
}

std::vector<RouteSpec> reference_routes(const Config& c, const Ip4Set& pods) {
    const Ip4 zt = c.tunnel.remote_ip;
    const std::string& zv = c.kernel.ztunnel_dev;
    auto to_ztunnel = [&](uint32_t table) {
        return RouteSpec{table, zt, 32, Ip4{}, zv, Ip4{}, false};
    };
    std::vector<RouteSpec> r = {to_ztunnel(kTableInbound)};
    for (Ip4 pod : pods)
        r.push_back(
            {kTableInbound, pod, 32, kIstioinPeer, c.kernel.istioin, c.tunnel.local_ip, false});
    r.push_back(to_ztunnel(kTableOutbound));
    r.push_back(
        {kTableOutbound, Ip4{}, 0, c.kernel.istioout_peer, c.kernel.istioout, Ip4{}, false});
    r.push_back(to_ztunnel(kTableProxyReturn));
    r.push_back({kTableProxyReturn, Ip4{}, 0, zt, zv, Ip4{}, true});
    return r;
}

std::vector<GeneveSpec> reference_links(const Config& c) {
    GeneveSpec in, out;
    in.name = c.kernel.istioin;
    // The inbound section's VNI and address when the dataplane does inbound too, so that
    // the kernel's istioin and ztgeneve's tunnel row agree; Istio's constants otherwise.
    in.vni = c.inbound.enabled ? c.inbound.vni : kIstioinVni;
    in.address = c.inbound.enabled ? c.inbound.inner_ip : kIstioinAddr;
    out.name = c.kernel.istioout;
    out.vni = c.tunnel.vni;
    out.address = c.tunnel.inner_ip;
    for (GeneveSpec* g : {&in, &out}) {
        g->remote = c.tunnel.remote_ip;
        g->port = c.tunnel.udp_port;
        g->prefix = 30;
        g->mtu = uint16_t(c.tunnel.mtu - 50);
    }
    return {in, out};
}

RoutePlan plan_routes(const std::vector<Rtnl::Route>& have, const std::vector<RouteSpec>& want) {
    RoutePlan p;
    const auto wanted = by_place(want, [](const RouteSpec& r) { return r; });
    const auto there = by_place(have, [](const Rtnl::Route& r) { return r.spec; });
    for (const Rtnl::Route& h : have) {
        if (!h.ours) continue;
        const auto w = wanted.find(place(h.spec));
        if (w == wanted.end() || !(*w->second == h.spec)) p.remove.push_back(h.spec);
    }
    for (const RouteSpec& w : want) {
        const auto it = there.find(place(w));
        const Rtnl::Route* h = it == there.end() ? nullptr : it->second;
        if (h == nullptr || (h->ours && !(h->spec == w)))
            p.add.push_back(w);
        else if (!h->ours && !(h->spec == w))
            p.conflicts.push_back(route_text(w) + ": the table already has " + route_text(h->spec) +
                                  " (not ztgeneve's); left alone");
    }
    return p;
}

Findings compare_with_reference(const Config& c, const Ip4Set& pods, const KernelListing& have) {
    Findings f;
    for (const RuleSpec& w : reference_rules()) {
        const std::string name = "ip rule " + rule_text(w);
        const auto h = std::find_if(have.rules.begin(), have.rules.end(),
                                    [&](const RuleSpec& x) { return x.prio == w.prio; });
        if (std::find(have.rules.begin(), have.rules.end(), w) != have.rules.end())
            f.present.push_back(name);
        else if (h != have.rules.end())
            f.different.push_back(name + ": the kernel has " + rule_text(*h));
        else
            f.missing.push_back(name);
    }
    const auto routes_there = by_place(have.routes, [](const RouteSpec& r) { return r; });
    for (const RouteSpec& w : reference_routes(c, pods)) {
        const auto it = routes_there.find(place(w));
        const RouteSpec* h = it == routes_there.end() ? nullptr : it->second;
        if (h == nullptr)
            f.missing.push_back("route " + route_text(w));
        else if (*h == w)
            f.present.push_back("route " + route_text(w));
        else
            f.different.push_back("route " + route_text(w) + ": the kernel has " + route_text(*h));
    }
    // Chains compared whole, in order (a rule in the wrong place is not the reference).
    std::map<std::pair<std::string, std::string>, std::vector<std::string>> chains;
    for (const IptRule& r : reference_iptables(c)) {
        const auto t = have.iptables.find(r.table);
        const std::string name = "iptables -t " + r.table + " " + iptables_saved_form(r, false);
        if (r.jump_at_top) {
            const bool there = t != have.iptables.end() &&
                               (t->second.lines.count(iptables_saved_form(r, false)) != 0 ||
                                t->second.lines.count(iptables_saved_form(r, true)) != 0);
            (there ? f.present : f.missing).push_back(name);
        } else {
            chains[{r.table, r.chain}].push_back(iptables_saved_form(r, false));
        }
    }
    for (const auto& [key, want] : chains) {
        const std::string name = "iptables -t " + key.first + " chain " + key.second;
        const auto t = have.iptables.find(key.first);
        const auto ch = t == have.iptables.end() ? nullptr : &t->second;
        if (ch == nullptr || !ch->chains.count(key.second)) {
            f.missing.push_back(name + " (" + std::to_string(want.size()) + " rules)");
            continue;
        }
        std::vector<std::string> got;
        if (auto it = ch->rules.find(key.second); it != ch->rules.end())
            for (const std::string& l : it->second) got.push_back(iptables_without_comment(l));
        if (got == want) {
            f.present.push_back(name);
            continue;
        }
        size_t i = 0;
        while (i < got.size() && i < want.size() && got[i] == want[i]) i++;
        f.different.push_back(name + ": rule " + std::to_string(i + 1) + " is `" +
                              (i < got.size() ? got[i] : "(none)") + "`, the reference's `" +
                              (i < want.size() ? want[i] : "(none)") + "`");
    }
    for (const GeneveSpec& w : reference_links(c)) {
        const std::string name = "link " + w.name + " (geneve id " + std::to_string(w.vni) +
                                 " remote " + format_ip(w.remote) + " dstport " +
                                 std::to_string(w.port) + ")";
        const auto h = have.links.find(w.name);
        if (h == have.links.end())
            f.missing.push_back(name);
        else if (h->second.kind != "geneve")
            f.different.push_back(
                name + ": the kernel's is a " +
                (h->second.kind.empty() ? "link of another kind" : h->second.kind));
        else if (h->second.vni != w.vni || h->second.remote != w.remote || h->second.port != w.port)
            f.different.push_back(name + ": the kernel's has id " + std::to_string(h->second.vni) +
                                  " remote " + format_ip(h->second.remote) + " dstport " +
                                  std::to_string(h->second.port));
        else
            f.present.push_back(name);
    }
    return f;
}

} // namespace ztg
