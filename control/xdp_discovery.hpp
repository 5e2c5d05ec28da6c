// The links of the attach: xdp ports at run time (README.md, "On a node a CNI plumbed").
// `links: auto` on a pods port: its links follow the meshed pods. A meshed pod's link is the
// one its host route in the main table leads to (`<ip>/32 dev <link>`, as a CNI installs
// it); that link gets the port's program once both the pod and its route are there, in
// either order, and loses it when the pod leaves the meshed set, its route goes or the link
// is deleted. A listed link deleted is detached and gets its port's program again when a
// link of its name appears. A deletion (RTM_DELLINK) drops the link's state first, so a new
// link given the same ifindex is another link. Runs on the control thread; nothing here
// touches the workers or the pod table.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "control/xdp_attach.hpp"

struct nl_sock;

namespace ztg {

// The pure parts, for tests.
using HostRoutes = std::map<Ip4, unsigned, Ip4Order>; // pod address -> ifindex of its /32
using LinkNames = std::map<unsigned, std::string>;    // ifindex -> name, the links now
using ListedLinks = std::map<std::string, uint32_t>;  // a port's listed link -> the port

// Why a link should have a port's program: it is listed (pod empty) or a meshed pod's route
// leads to it (the first such pod).
struct LinkWant {
    uint32_t port = 0;
    std::optional<Ip4> pod;
    bool operator==(const LinkWant&) const = default;
};

// The links that should have a program: each listed link that is there now, and (auto_port
// a port's index; -1: none) the links the meshed pods' routes lead to, for auto_port. A pod
// without a route or whose link is not there yet leads nowhere; a listed link stays its
// port's.
std::map<XdpLinkId, LinkWant> wanted_links(const Ip4Set& pods, const HostRoutes& routes,
                                           const LinkNames& names, const ListedLinks& listed,
                                           int auto_port);

// What to take off and what to attach to make `attached` the wanted links: a link of the
// same ifindex under another name is another link (detached, then the new one attached).
struct LinkPlan {
    std::vector<XdpLinkId> detach, attach;
};
LinkPlan plan_links(const std::map<XdpLinkId, uint32_t>& attached,
                    const std::map<XdpLinkId, LinkWant>& wanted);

class XdpDiscovery {
  public:
    XdpDiscovery() = default;
    ~XdpDiscovery();
    XdpDiscovery(const XdpDiscovery&) = delete;
    XdpDiscovery& operator=(const XdpDiscovery&) = delete;

    // After XdpAttach::attach(): nothing to do without xdp ports. The error: no netlink.
    Status start(const Config& cfg, const XdpAttach& xdp);
    bool active() const { return watch_ != nullptr; }
    // The meshed set changed (control calls it with the pod table's changes).
    void pod(Ip4 ip, bool meshed);
    // Control loop: at once after a pod change (links: auto), else every kernel.poll_ms if
    // the kernel said a link (or route) changed: re-read links (and routes), attach, detach.
    void poll(XdpAttach& xdp);

  private:
    bool read_events(); // true if anything arrived (or the socket overflowed)
    void sync(XdpAttach& xdp);

    nl_sock* dump_ = nullptr;
    nl_sock* watch_ = nullptr;
    std::vector<std::string> keys_; // per xdp port: "ports[N] (name)"
    ListedLinks listed_;
    int auto_port_ = -1; // the links: auto port, -1: none
    Ip4Set pods_;
    bool dirty_ = true;
    std::set<XdpLinkId> deleted_; // RTM_DELLINK since the last sync (name empty: unknown)
    std::chrono::milliseconds period_{100};
    std::chrono::steady_clock::time_point next_{};
    std::set<XdpLinkId> failing_; // attach failed, logged once while it lasts
};

} // namespace ztg
