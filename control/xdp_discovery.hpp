// `links: auto` on a pods port with attach: xdp (README.md, "On a node a CNI plumbed"): the
// port's links follow the meshed pods at run time. A meshed pod's link is the one its host
// route in the main table leads to (`<ip>/32 dev <link>`, as a CNI installs it); that link
// gets the port's program once both the pod and its route are there, in either order, and
// loses it when the pod leaves the meshed set, its route goes or the link is deleted
// (RTM_DELLINK: its state is dropped, so a new link given the same ifindex starts afresh).
// Runs on the control thread; nothing here touches the workers or the pod table.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
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

// The links the meshed pods' routes lead to, each with the first pod that leads there; a
// pod without a route or whose link is not there yet, and the links in `fixed` (another
// port's list), lead nowhere.
std::map<XdpLinkId, Ip4> wanted_links(const Ip4Set& pods, const HostRoutes& routes,
                                      const LinkNames& names, const std::set<std::string>& fixed);

// What to take off and what to attach to make `attached` the wanted links: a link of the
// same ifindex under another name is another link (detached, then the new one attached).
struct LinkPlan {
    std::vector<XdpLinkId> detach, attach;
};
LinkPlan plan_links(const std::vector<XdpLinkId>& attached, const std::map<XdpLinkId, Ip4>& wanted);

class XdpDiscovery {
  public:
    XdpDiscovery() = default;
    ~XdpDiscovery();
    XdpDiscovery(const XdpDiscovery&) = delete;
    XdpDiscovery& operator=(const XdpDiscovery&) = delete;

    // After XdpAttach::attach(): nothing to do unless it discovers(). The error: no netlink.
    Status start(const Config& cfg, const XdpAttach& xdp);
    bool active() const { return watch_ != nullptr; }
    // The meshed set changed (control calls it with the pod table's changes).
    void pod(Ip4 ip, bool meshed);
    // Control loop: at once after a pod change, else every kernel.poll_ms if the kernel
    // said a link or route changed: re-read routes and links, attach and detach.
    void poll(XdpAttach& xdp);

  private:
    bool read_events(); // true if anything arrived (or the socket overflowed)
    void sync(XdpAttach& xdp);

    nl_sock* dump_ = nullptr;
    nl_sock* watch_ = nullptr;
    std::string key_; // "ports[N] (name)"
    std::set<std::string> fixed_;
    Ip4Set pods_;
    bool dirty_ = true;
    std::set<XdpLinkId> deleted_; // RTM_DELLINK since the last sync (name empty: unknown)
    std::chrono::milliseconds period_{100};
    std::chrono::steady_clock::time_point next_{};
    std::set<XdpLinkId> failing_; // attach failed, logged once while it lasts
};

} // namespace ztg
