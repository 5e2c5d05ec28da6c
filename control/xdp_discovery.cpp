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

std::map<XdpLinkId, Ip4> wanted_links(const Ip4Set& pods, const HostRoutes& routes,
                                      const LinkNames& names, const std::set<std::string>& fixed) {
    std::map<XdpLinkId, Ip4> out;
    for (Ip4 ip : pods) {
        auto r = routes.find(ip);
        if (r == routes.end()) continue;
        auto n = names.find(r->second);
        if (n == names.end() || fixed.count(n->second) != 0) continue;
        out.emplace(XdpLinkId{n->second, r->second}, ip); // the first pod stays
    }
    return out;
}

LinkPlan plan_links(const std::vector<XdpLinkId>& attached,
                    const std::map<XdpLinkId, Ip4>& wanted) {
    LinkPlan p;
    const std::set<XdpLinkId> have(attached.begin(), attached.end());
    for (const XdpLinkId& l : have)
        if (wanted.count(l) == 0) p.detach.push_back(l);
    for (const auto& [l, ip] : wanted)
        if (have.count(l) == 0) p.attach.push_back(l);
    return p;
}

namespace {

nl_sock* open_socket(bool watch) {
    nl_sock* s = nl_socket_alloc();
    if (s == nullptr) return nullptr;
    if (watch) nl_socket_disable_seq_check(s);
    if (nl_connect(s, NETLINK_ROUTE) != 0 ||
        (watch && (nl_socket_add_memberships(s, RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, 0) != 0 ||
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
    if (!xdp.discovers()) return Ok{};
    for (size_t i = 0; i < cfg.ports.size(); i++) {
        const PortConfig& p = cfg.ports[i];
        fixed_.insert(p.links.begin(), p.links.end());
        if (p.links_auto) key_ = "ports[" + std::to_string(i) + "] (" + p.name + ")";
    }
    period_ = std::chrono::milliseconds(cfg.kernel.poll_ms);
    dump_ = open_socket(false);
    watch_ = open_socket(true);
    if (dump_ == nullptr || watch_ == nullptr)
        return err("xdp: " + key_ +
                   ".links: auto: cannot open the netlink sockets that find "
                   "the pods' links");
    return Ok{};
}

void XdpDiscovery::pod(Ip4 ip, bool meshed) {
    if (!active()) return;
    if (meshed ? pods_.insert(ip).second : pods_.erase(ip) != 0) dirty_ = true;
}

bool XdpDiscovery::read_events() {
    bool any = false;
    alignas(nlmsghdr) char buf[32768];
    for (;;) {
        const ssize_t n = recv(nl_socket_get_fd(watch_), buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && errno == ENOBUFS) { // fell behind: the sync re-reads everything
            spdlog::warn("xdp: {}.links: auto: netlink notifications overflowed; re-reading "
                         "links and routes",
                         key_);
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
    if (!active() || !xdp.discovers()) return;
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
    if (!read_routes(dump_, routes) || !read_links(dump_, names)) {
        spdlog::error("xdp: {}.links: auto: cannot read the kernel's routes and links", key_);
        return; // dirty_ stays: tried again on the next poll
    }
    dirty_ = false;
    // A deleted link's state goes first: a new link may have its ifindex (and its name).
    for (const XdpLinkId& l : xdp.discovered()) {
        const bool deleted = deleted_.count(l) != 0 || deleted_.count({"", l.ifindex}) != 0 ||
                             !xdp.attached_in_kernel(l);
        if (!deleted) continue;
        xdp.detach_discovered(l);
        spdlog::info("xdp: {}: {} (ifindex {}) detached: the link was deleted", key_, l.name,
                     l.ifindex);
    }
    deleted_.clear();
    const auto wanted = wanted_links(pods_, routes, names, fixed_);
    const LinkPlan plan = plan_links(xdp.discovered(), wanted);
    for (const XdpLinkId& l : plan.detach) {
        xdp.detach_discovered(l);
        auto n = names.find(l.ifindex);
        spdlog::info("xdp: {}: {} (ifindex {}) detached: {}", key_, l.name, l.ifindex,
                     n == names.end() || n->second != l.name
                         ? "the link was deleted"
                         : "no meshed pod's route leads to it any more");
    }
    std::set<XdpLinkId> failing;
    for (const XdpLinkId& l : plan.attach) {
        const Ip4 pod = wanted.at(l);
        if (auto s = xdp.attach_discovered(l); !s) {
            if (failing_.count(l) == 0)
                spdlog::error("xdp: {}: {} (ifindex {}, pod {}): {}", key_, l.name, l.ifindex,
                              format_ip(pod), s.error());
            failing.insert(l);
            continue;
        }
        spdlog::info("xdp: {}: {} (ifindex {}) attached: pod {}", key_, l.name, l.ifindex,
                     format_ip(pod));
    }
    failing_ = std::move(failing);
}

} // namespace ztg
