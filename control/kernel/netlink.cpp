#include "control/kernel/netlink.hpp"

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

extern "C" {
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/geneve.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <netlink/socket.h>
}

#include "config/config.hpp"

namespace ztg {

namespace {

template <class T, void (*F)(T*)>
struct Free {
    void operator()(T* p) const { F(p); }
};
void put_cache(nl_cache* c) {
    nl_cache_free(c);
}
void put_addr(nl_addr* a) {
    nl_addr_put(a);
}
void put_rule(rtnl_rule* r) {
    rtnl_rule_put(r);
}
void put_route(rtnl_route* r) {
    rtnl_route_put(r);
}
void put_link(rtnl_link* l) {
    rtnl_link_put(l);
}
void put_raddr(rtnl_addr* a) {
    rtnl_addr_put(a);
}
using Cache = std::unique_ptr<nl_cache, Free<nl_cache, put_cache>>;
using Addr = std::unique_ptr<nl_addr, Free<nl_addr, put_addr>>;
using RulePtr = std::unique_ptr<rtnl_rule, Free<rtnl_rule, put_rule>>;
using RoutePtr = std::unique_ptr<rtnl_route, Free<rtnl_route, put_route>>;
using LinkPtr = std::unique_ptr<rtnl_link, Free<rtnl_link, put_link>>;
using RAddrPtr = std::unique_ptr<rtnl_addr, Free<rtnl_addr, put_raddr>>;

Addr ipv4(Ip4 ip, uint8_t len) {
    Addr a(nl_addr_build(AF_INET, &ip.raw, 4));
    if (a) nl_addr_set_prefixlen(a.get(), len);
    return a;
}

Ip4 ip_of(nl_addr* a) {
    Ip4 ip;
    if (a == nullptr || nl_addr_get_family(a) != AF_INET || nl_addr_get_len(a) != 4) return ip;
    std::memcpy(&ip.raw, nl_addr_get_binary_addr(a), 4);
    return ip;
}

std::string nlerr(int e) {
    return nl_geterror(e);
}

// The rule as ztgeneve sends it (and the kernel matches it on delete).
RulePtr rule_object(const RuleSpec& want) {
    RulePtr r(rtnl_rule_alloc());
    rtnl_rule_set_family(r.get(), AF_INET);
    rtnl_rule_set_prio(r.get(), want.prio);
    if (want.mask != 0) {
        rtnl_rule_set_mark(r.get(), want.mark);
        rtnl_rule_set_mask(r.get(), want.mask);
    }
    if (want.goto_prio != 0) {
        rtnl_rule_set_action(r.get(), FR_ACT_GOTO);
        rtnl_rule_set_goto(r.get(), want.goto_prio);
    } else {
        rtnl_rule_set_table(r.get(), want.table);
        rtnl_rule_set_action(r.get(), FR_ACT_TO_TBL);
    }
    rtnl_rule_set_protocol(r.get(), kProto);
    return r;
}

} // namespace

std::string rule_text(const RuleSpec& r) {
    char b[128];
    std::string s = std::to_string(r.prio) + ": from all";
    if (r.mask != 0) {
        std::snprintf(b, sizeof b, " fwmark 0x%x/0x%x", r.mark, r.mask);
        s += b;
    }
    return s + (r.goto_prio != 0 ? " goto " + std::to_string(r.goto_prio)
                                 : " lookup " + std::to_string(r.table));
}

std::string route_text(const RouteSpec& r) {
    std::string s = "table " + std::to_string(r.table) + " " + format_prefix(r.dst, r.dst_len);
    if (r.gateway != Ip4{}) s += " via " + format_ip(r.gateway);
    s += " dev " + r.dev;
    if (r.gateway == Ip4{}) s += " scope link";
    if (r.onlink) s += " onlink";
    if (r.src != Ip4{}) s += " src " + format_ip(r.src);
    return s;
}

std::string format_prefix(Ip4 ip, uint8_t len) {
    if (len == 0) return "default";
    // fmt, not "/" + std::to_string(len): GCC 12 -O3's false -Wrestrict (GCC bug 105329).
    return len == 32 ? format_ip(ip) : fmt::format("{}/{}", format_ip(ip), len);
}

Rtnl::Rtnl() {
    sk_ = nl_socket_alloc();
    if (sk_ != nullptr && nl_connect(sk_, NETLINK_ROUTE) != 0) {
        nl_socket_free(sk_);
        sk_ = nullptr;
    }
}

Rtnl::~Rtnl() {
    if (sk_ != nullptr) nl_socket_free(sk_);
}

Result<std::vector<Rtnl::Rule>> Rtnl::rules() {
    nl_cache* raw = nullptr;
    if (int e = rtnl_rule_alloc_cache(sk_, AF_INET, &raw); e < 0)
        return err("ip rules: " + nlerr(e));
    Cache c(raw);
    std::vector<Rule> out;
    for (nl_object* o = nl_cache_get_first(c.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* r = reinterpret_cast<rtnl_rule*>(o);
        Rule x;
        x.spec = {rtnl_rule_get_prio(r), rtnl_rule_get_mark(r), rtnl_rule_get_mask(r),
                  rtnl_rule_get_table(r), 0};
        uint8_t proto = 0;
        x.ours = rtnl_rule_get_protocol(r, &proto) == 0 && proto == kProto;
        if (rtnl_rule_get_mark(r) == 0xFFFFFFFF) x.spec.mark = x.spec.mask = 0; // libnl: no mark
        if (rtnl_rule_get_action(r) == FR_ACT_GOTO) {
            x.spec.goto_prio = rtnl_rule_get_goto(r);
            x.spec.table = 0;
        }
        out.push_back(x);
    }
    return out;
}

Status Rtnl::ensure_rule(const RuleSpec& want) {
    auto have = rules();
    if (!have) return err(have.error());
    for (const Rule& r : *have)
        if (r.spec == want) return Ok{}; // ours from an earlier run, or identical: adopt
    RulePtr r = rule_object(want);
    if (int e = rtnl_rule_add(sk_, r.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0)
        return err("ip rule " + rule_text(want) + ": " + nlerr(e));
    return Ok{};
}

Status Rtnl::remove_rule(const RuleSpec& want) {
    auto have = rules();
    if (!have) return err(have.error());
    for (const Rule& r : *have) {
        if (!(r.spec == want) || !r.ours) continue;
        RulePtr x = rule_object(want);
        if (int e = rtnl_rule_delete(sk_, x.get(), 0); e < 0)
            return err("ip rule " + rule_text(want) + ": " + nlerr(e));
    }
    return Ok{};
}

std::optional<int> Rtnl::ifindex(const std::string& name) {
    rtnl_link* l = nullptr;
    if (rtnl_link_get_kernel(sk_, 0, name.c_str(), &l) < 0 || l == nullptr) return std::nullopt;
    LinkPtr link(l);
    return rtnl_link_get_ifindex(link.get());
}

Result<std::vector<Rtnl::Route>> Rtnl::routes(uint32_t table) {
    nl_cache* raw = nullptr;
    if (int e = rtnl_route_alloc_cache(sk_, AF_INET, 0, &raw); e < 0)
        return err("routes: " + nlerr(e));
    Cache c(raw);
    std::vector<Route> out;
    for (nl_object* o = nl_cache_get_first(c.get()); o != nullptr; o = nl_cache_get_next(o)) {
        auto* r = reinterpret_cast<rtnl_route*>(o);
        if (rtnl_route_get_table(r) != table) continue;
        Route x;
        nl_addr* dst = rtnl_route_get_dst(r);
        x.spec.table = table;
        x.spec.dst = ip_of(dst);
        x.spec.dst_len = uint8_t(dst != nullptr ? nl_addr_get_prefixlen(dst) : 0);
        if (rtnl_route_get_nnexthops(r) > 0) {
            rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
            x.spec.gateway = ip_of(rtnl_route_nh_get_gateway(nh));
            char name[IF_NAMESIZE] = {};
            if (if_indextoname(unsigned(rtnl_route_nh_get_ifindex(nh)), name) != nullptr)
                x.spec.dev = name;
            x.spec.onlink = (rtnl_route_nh_get_flags(nh) & RTNH_F_ONLINK) != 0;
        }
        x.spec.src = ip_of(rtnl_route_get_pref_src(r));
        x.ours = rtnl_route_get_protocol(r) == kProto;
        out.push_back(x);
    }
    return out;
}

Status Rtnl::add_route(const RouteSpec& want) {
    const auto idx = ifindex(want.dev);
    if (!idx) return err(route_text(want) + ": no link named " + want.dev);
    RoutePtr r(rtnl_route_alloc());
    rtnl_route_set_family(r.get(), AF_INET);
    rtnl_route_set_table(r.get(), want.table);
    Addr dst = ipv4(want.dst, want.dst_len);
    rtnl_route_set_dst(r.get(), dst.get());
    rtnl_route_set_protocol(r.get(), kProto);
    rtnl_route_set_scope(r.get(), want.gateway == Ip4{} ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE);
    rtnl_nexthop* nh = rtnl_route_nh_alloc();
    rtnl_route_nh_set_ifindex(nh, *idx);
    if (want.gateway != Ip4{}) {
        Addr gw = ipv4(want.gateway, 32);
        rtnl_route_nh_set_gateway(nh, gw.get());
    }
    if (want.onlink) rtnl_route_nh_set_flags(nh, RTNH_F_ONLINK);
    Addr src = ipv4(want.src, 32);
    if (want.src != Ip4{}) rtnl_route_set_pref_src(r.get(), src.get());
    rtnl_route_add_nexthop(r.get(), nh); // the route owns nh now
    if (int e = rtnl_route_add(sk_, r.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0)
        return err(route_text(want) + ": " + nlerr(e));
    return Ok{};
}

Status Rtnl::remove_route(const RouteSpec& want) {
    auto have = routes(want.table);
    if (!have) return err(have.error());
    for (const Route& r : *have) {
        if (!r.ours || r.spec.dst != want.dst || r.spec.dst_len != want.dst_len) continue;
        RoutePtr x(rtnl_route_alloc());
        rtnl_route_set_family(x.get(), AF_INET);
        rtnl_route_set_table(x.get(), want.table);
        Addr dst = ipv4(want.dst, want.dst_len);
        rtnl_route_set_dst(x.get(), dst.get());
        rtnl_route_set_protocol(x.get(), kProto);
        rtnl_route_set_scope(x.get(), RT_SCOPE_NOWHERE);
        if (int e = rtnl_route_delete(sk_, x.get(), 0); e < 0)
            return err(route_text(want) + ": " + nlerr(e));
    }
    return Ok{};
}

std::optional<Rtnl::GeneveInfo> Rtnl::link_info(const std::string& name) {
    rtnl_link* l = nullptr;
    if (rtnl_link_get_kernel(sk_, 0, name.c_str(), &l) < 0 || l == nullptr) return std::nullopt;
    LinkPtr link(l);
    GeneveInfo g;
    const char* kind = rtnl_link_get_type(link.get());
    g.kind = kind != nullptr ? kind : "";
    if (g.kind == "geneve") {
        rtnl_link_geneve_get_id(link.get(), &g.vni);
        nl_addr* remote = nullptr;
        if (rtnl_link_geneve_get_remote(link.get(), &remote) == 0 && remote != nullptr) {
            g.remote = ip_of(remote);
            nl_addr_put(remote);
        }
        uint32_t port = 0;
        if (rtnl_link_geneve_get_port(link.get(), &port) == 0)
            g.port = uint16_t(port); // host order
    }
    return g;
}

Status Rtnl::ensure_geneve(const GeneveSpec& g) {
    if (auto have = link_info(g.name)) {
        if (have->kind != "geneve")
            return err(g.name + ": a link of that name exists but is a " +
                       (have->kind.empty() ? "device of another kind" : have->kind) +
                       " device, not geneve; left alone");
        return Ok{};
    }
    LinkPtr link(rtnl_link_geneve_alloc());
    if (!link) return err(g.name + ": cannot allocate a link object");
    rtnl_link_set_name(link.get(), g.name.c_str());
    rtnl_link_geneve_set_id(link.get(), g.vni);
    Addr remote = ipv4(g.remote, 32);
    rtnl_link_geneve_set_remote(link.get(), remote.get());
    rtnl_link_geneve_set_port(link.get(), g.port); // libnl converts to network order
    rtnl_link_geneve_set_udp_csum(link.get(), 0);
    if (g.mtu != 0) rtnl_link_set_mtu(link.get(), g.mtu);
    if (int e = rtnl_link_add(sk_, link.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0) {
        std::string why = nlerr(e);
        if (e == -NLE_OPNOTSUPP || e == -NLE_NOATTR || e == -NLE_INVAL || e == -NLE_OBJ_NOTFOUND)
            why += " (does this kernel have the geneve module? `modprobe geneve`)";
        return err(g.name + ": cannot create the Geneve link (vni " + std::to_string(g.vni) +
                   ", remote " + format_ip(g.remote) + ", dstport " + std::to_string(g.port) +
                   "): " + why);
    }
    const auto idx = ifindex(g.name);
    if (!idx) return err(g.name + ": created but not found");
    RAddrPtr a(rtnl_addr_alloc());
    rtnl_addr_set_ifindex(a.get(), *idx);
    Addr local = ipv4(g.address, g.prefix);
    rtnl_addr_set_local(a.get(), local.get());
    if (int e = rtnl_addr_add(sk_, a.get(), 0); e < 0)
        return err(g.name + ": address " + format_prefix(g.address, g.prefix) + ": " + nlerr(e));
    LinkPtr up(rtnl_link_alloc());
    rtnl_link_set_flags(up.get(), IFF_UP);
    rtnl_link_set_name(up.get(), g.name.c_str());
    LinkPtr cur(nullptr);
    rtnl_link* c = nullptr;
    if (rtnl_link_get_kernel(sk_, *idx, nullptr, &c) == 0) cur.reset(c);
    if (cur) rtnl_link_change(sk_, cur.get(), up.get(), 0);
    return Ok{};
}

Status Rtnl::remove_link(const std::string& name) {
    const auto idx = ifindex(name);
    if (!idx) return Ok{};
    LinkPtr l(rtnl_link_alloc());
    rtnl_link_set_ifindex(l.get(), *idx);
    if (int e = rtnl_link_delete(sk_, l.get()); e < 0) return err(name + ": " + nlerr(e));
    return Ok{};
}

RtnlWatch::RtnlWatch() {
    sk_ = nl_socket_alloc();
    if (sk_ == nullptr) return;
    nl_socket_disable_seq_check(sk_);
    if (nl_connect(sk_, NETLINK_ROUTE) != 0 ||
        nl_socket_add_memberships(sk_, RTNLGRP_IPV4_RULE, RTNLGRP_IPV4_ROUTE, RTNLGRP_LINK, 0) !=
            0 ||
        nl_socket_set_nonblocking(sk_) != 0) {
        nl_socket_free(sk_);
        sk_ = nullptr;
    }
}

RtnlWatch::~RtnlWatch() {
    if (sk_ != nullptr) nl_socket_free(sk_);
}

bool RtnlWatch::changed() {
    if (sk_ == nullptr) return false;
    bool any = false;
    const int fd = nl_socket_get_fd(sk_);
    char buf[16384];
    for (;;) {
        const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            any = true;
            continue;
        }
        if (n < 0 && errno == ENOBUFS) { // we fell behind: the caller re-reads everything
            overflows_++;
            any = true;
            continue;
        }
        break;
    }
    return any;
}

} // namespace ztg
