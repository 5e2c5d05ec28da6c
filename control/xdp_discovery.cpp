#include "control/xdp_discovery.hpp"

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

extern "C" {
#include <netlink/addr.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/socket.h>
}

namespace ztg {

std::map<XdpLinkId, LinkWant> wanted_links(const Ip4Set& pods, const HostRoutes& routes,
                                           const LinkNames& names, const ListedLinks& listed,
                                           int auto_port) {
    std::map<XdpLinkId, LinkWant> out;
    for (const auto& [ifindex, name] : names)
        if (auto l = listed.find(name); l != listed.end())
            out.emplace(XdpLinkId{name, ifindex}, LinkWant{l->second, std::nullopt});
    if (auto_port < 0) return out;
    for (Ip4 ip : pods) {
        auto r = routes.find(ip);
        if (r == routes.end()) continue;
        auto n = names.find(r->second);
        if (n == names.end() || listed.count(n->second) != 0) continue;
        out.emplace(XdpLinkId{n->second, r->second},
                    LinkWant{uint32_t(auto_port), ip}); // the first pod stays
    }
    return out;
}

LinkPlan plan_links(const std::map<XdpLinkId, uint32_t>& attached,
                    const std::map<XdpLinkId, LinkWant>& wanted) {
    LinkPlan p;
    for (const auto& [l, port] : attached)
        if (auto w = wanted.find(l); w == wanted.end() || w->second.port != port)
            p.detach.push_back(l);
    for (const auto& [l, w] : wanted)
        if (auto a = attached.find(l); a == attached.end() || a->second != w.port)
            p.attach.push_back(l);
    return p;
}

namespace {

// watch: subscribed to link notifications, and route ones with routes.
nl_sock* open_socket(bool watch, bool routes) {
    nl_sock* s = nl_socket_alloc();
    if (s == nullptr) return nullptr;
    if (watch) nl_socket_disable_seq_check(s);
    if (nl_connect(s, NETLINK_ROUTE) != 0 ||
        (watch &&
         (nl_socket_add_memberships(s, RTNLGRP_LINK, routes ? RTNLGRP_IPV4_ROUTE : 0, 0) != 0 ||
          nl_socket_set_nonblocking(s) != 0))) {
        nl_socket_free(s);
        return nullptr;
    }
    return s;
}

// Table main's host routes: `<ip>/32 dev <link>`, no gateway.
bool read_routes(nl_sock* s, HostRoutes& out) {
    nl_cache* c = nullptr;
    if (rtnl_route_alloc_cache(s, AF_INET, 0, &c) < 0) return false;
    for (nl_object* o = nl_cache_get_first(c); o != nullptr; o = nl_cache_get_next(o)) {
        auto* r = reinterpret_cast<rtnl_route*>(o);
        nl_addr* dst = rtnl_route_get_dst(r);
        if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_type(r) != RTN_UNICAST ||
            dst == nullptr || nl_addr_get_prefixlen(dst) != 32 || nl_addr_get_len(dst) != 4 ||
            rtnl_route_get_nnexthops(r) != 1)
            continue;
        rtnl_nexthop* nh = rtnl_route_nexthop_n(r, 0);
        if (rtnl_route_nh_get_gateway(nh) != nullptr) continue;
        Ip4 ip;
        std::memcpy(&ip.raw, nl_addr_get_binary_addr(dst), 4);
        out[ip] = unsigned(rtnl_route_nh_get_ifindex(nh));
    }
    nl_cache_free(c);
    return true;
}

bool read_links(nl_sock* s, LinkNames& out) {
    nl_cache* c = nullptr;
    if (rtnl_link_alloc_cache(s, AF_UNSPEC, &c) < 0) return false;
    for (nl_object* o = nl_cache_get_first(c); o != nullptr; o = nl_cache_get_next(o)) {
        auto* l = reinterpret_cast<rtnl_link*>(o);
        if (const char* n = rtnl_link_get_name(l); n != nullptr)
            out[unsigned(rtnl_link_get_ifindex(l))] = n;
    }
    nl_cache_free(c);
    return true;
}

} // namespace

XdpDiscovery::~XdpDiscovery() {
    if (dump_ != nullptr) nl_socket_free(dump_);
    if (watch_ != nullptr) nl_socket_free(watch_);
}

Status XdpDiscovery::start(const Config& cfg, const XdpAttach& xdp) {
    if (!xdp.active()) return Ok{};
    for (uint32_t a = 0; a < xdp.ports().size(); a++) {
        const XdpAttach::Port& p = xdp.ports()[a];
        keys_.push_back(p.key);
        for (const std::string& l : p.links) listed_.emplace(l, a);
        if (p.links_auto) auto_port_ = int(a);
    }
    period_ = std::chrono::milliseconds(cfg.kernel.poll_ms);
    dump_ = open_socket(false, false);
    watch_ = open_socket(true, auto_port_ >= 0);
    if (dump_ == nullptr || watch_ == nullptr)
        return err("xdp: cannot open the netlink sockets that follow the links of the "
                   "attach: xdp ports");
    return Ok{};
}

void XdpDiscovery::pod(Ip4 ip, bool meshed) {
    if (!active() || auto_port_ < 0) return;
    if (meshed ? pods_.insert(ip).second : pods_.erase(ip) != 0) dirty_ = true;
}

bool XdpDiscovery::read_events() {
    bool any = false;
    alignas(nlmsghdr) char buf[32768];
    for (;;) {
        const ssize_t n = recv(nl_socket_get_fd(watch_), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == ENOBUFS) { // fell behind: the sync re-reads everything
            spdlog::warn("xdp: netlink notifications overflowed; re-reading the links{}",
                         auto_port_ >= 0 ? " and routes" : "");
            any = true;
            continue;
        }
        if (n <= 0) return any;
        any = true;
        int len = int(n);
        for (auto* h = reinterpret_cast<nlmsghdr*>(buf); nlmsg_ok(h, len);
             h = nlmsg_next(h, &len)) {
            if (h->nlmsg_type != RTM_DELLINK || !nlmsg_valid_hdr(h, sizeof(ifinfomsg))) continue;
            XdpLinkId gone{"", unsigned(static_cast<ifinfomsg*>(nlmsg_data(h))->ifi_index)};
            if (nlattr* a = nlmsg_find_attr(h, sizeof(ifinfomsg), IFLA_IFNAME); a != nullptr) {
                const auto* name = static_cast<const char*>(nla_data(a));
                gone.name.assign(name, strnlen(name, size_t(nla_len(a))));
            }
            deleted_.insert(gone);
        }
    }
}

void XdpDiscovery::poll(XdpAttach& xdp) {
    if (!active() || !xdp.active()) return;
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_) {
        next_ = now + period_;
        if (read_events()) dirty_ = true;
    }
    if (dirty_) sync(xdp);
}

void XdpDiscovery::sync(XdpAttach& xdp) {
    read_events(); // a deletion queued before the dump is seen with it
    HostRoutes routes;
    LinkNames names;
    if ((auto_port_ >= 0 && !read_routes(dump_, routes)) || !read_links(dump_, names)) {
        spdlog::error("xdp: cannot read the kernel's {}",
                      auto_port_ >= 0 ? "routes and links" : "links");
        return; // dirty_ stays: tried again on the next poll
    }
    dirty_ = false;
    auto key = [&](uint32_t port) { return port < keys_.size() ? keys_[port] : std::string(); };
    auto again = [&](const XdpLinkId& l) {
        return listed_.count(l.name) != 0 ? "; attached again when a link of that name appears"
                                          : "";
    };
    // A deleted link's state goes first: a new link may have its ifindex (and its name).
    for (const auto& [l, port] : xdp.attached()) {
        const bool deleted = deleted_.count(l) != 0 || deleted_.count({"", l.ifindex}) != 0 ||
                             !xdp.attached_in_kernel(l);
        if (!deleted) continue;
        xdp.detach_link(l, true);
        spdlog::info("xdp: {}: {} (ifindex {}) detached: the link was deleted{}", key(port), l.name,
                     l.ifindex, again(l));
    }
    deleted_.clear();
    const auto wanted = wanted_links(pods_, routes, names, listed_, auto_port_);
    const auto attached = xdp.attached();
    const LinkPlan plan = plan_links(attached, wanted);
    for (const XdpLinkId& l : plan.detach) {
        auto n = names.find(l.ifindex);
        const bool deleted = n == names.end() || n->second != l.name;
        xdp.detach_link(l, deleted);
        spdlog::info(
            "xdp: {}: {} (ifindex {}) detached: {}{}", key(attached.at(l)), l.name, l.ifindex,
            deleted ? "the link was deleted" : "no meshed pod's route leads to it any more",
            deleted ? again(l) : "");
    }
    std::set<XdpLinkId> failing;
    for (const XdpLinkId& l : plan.attach) {
        const LinkWant& w = wanted.at(l);
        const std::string why = w.pod ? "pod " + format_ip(*w.pod) : std::string("listed");
        if (auto s = xdp.attach_link(w.port, l); !s) {
            if (failing_.count(l) == 0)
                spdlog::error("xdp: {}: {} (ifindex {}, {}): {}", key(w.port), l.name, l.ifindex,
                              why, s.error());
            failing.insert(l);
            continue;
        }
        spdlog::info("xdp: {}: {} (ifindex {}) attached: {}", key(w.port), l.name, l.ifindex, why);
    }
    failing_ = std::move(failing);
}

} // namespace ztg
