// Rules, routes, links and addresses through libnl-3 (NETLINK_ROUTE), in the network
// namespace the process runs in. Everything ztgeneve installs carries the routing
// protocol kProto (`proto 250` in `ip rule` / `ip route`), which is how it recognises
// its own objects after a restart and leaves everyone else's alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/result.hpp"
#include "dataplane/net.hpp"

struct nl_sock;

namespace ztg {

constexpr uint8_t kProto = 250; // RTPROT value marking ztgeneve's rules and routes

// `ip rule add priority P [fwmark M/K] (lookup T | goto G)`; mask 0: no fwmark match.
struct RuleSpec {
    uint32_t prio = 0, mark = 0, mask = 0, table = 0;
    uint32_t goto_prio = 0; // non-zero: `goto goto_prio` instead of a lookup
    bool operator==(const RuleSpec&) const = default;
};
// As `ip rule` prints it, e.g. "100: from all fwmark 0x200/0x200 goto 32766".
std::string rule_text(const RuleSpec& r);

struct RouteSpec {
    uint32_t table = 0;
    Ip4 dst;
    uint8_t dst_len = 0;
    Ip4 gateway; // 0.0.0.0: none (on-link / scope link)
    std::string dev;
    Ip4 src;             // preferred source (`src`); 0.0.0.0: none
    bool onlink = false; // the gateway is on the link whatever its address (`onlink`)
    // Same destination in the same table, and the same way there.
    bool operator==(const RouteSpec&) const = default;
};
// "table 100 10.244.2.3 via 192.168.126.2 dev istioin src 10.244.2.1", as `ip route` says it.
std::string route_text(const RouteSpec& r);

struct GeneveSpec {
    std::string name;
    uint32_t vni = 0;
    Ip4 remote;
    uint16_t port = 6081;
    Ip4 address;
    uint8_t prefix = 30;
    uint16_t mtu = 0; // 0: kernel default
};

class Rtnl {
  public:
    Rtnl();
    ~Rtnl();
    Rtnl(const Rtnl&) = delete;
    Rtnl& operator=(const Rtnl&) = delete;
    bool ok() const { return sk_ != nullptr; }

    // Rules (IPv4). `ours`: installed with kProto.
    struct Rule {
        RuleSpec spec;
        bool ours = false;
    };
    Result<std::vector<Rule>> rules();
    Status ensure_rule(const RuleSpec& r); // adds it unless an identical rule exists
    Status remove_rule(const RuleSpec& r); // only if it is ours

    struct Route {
        RouteSpec spec;
        bool ours = false;
    };
    Result<std::vector<Route>> routes(uint32_t table);
    Status add_route(const RouteSpec& r);    // no check: see plan_routes (reference.hpp)
    Status remove_route(const RouteSpec& r); // only if it is ours

    std::optional<int> ifindex(const std::string& name);
    // The Geneve link: created with its address unless a link of that name exists.
    Status ensure_geneve(const GeneveSpec& g);
    Status remove_link(const std::string& name);
    struct GeneveInfo {
        std::string kind;
        uint32_t vni = 0;
        Ip4 remote;
        uint16_t port = 0;
    };
    std::optional<GeneveInfo> link_info(const std::string& name);

  private:
    nl_sock* sk_ = nullptr;
};

// RTNLGRP_IPV4_RULE / IPV4_ROUTE / LINK notifications, read without blocking. changed()
// is true when anything arrived since the last call, or the socket overflowed (ENOBUFS):
// either way the caller re-reads the kernel.
class RtnlWatch {
  public:
    RtnlWatch();
    ~RtnlWatch();
    RtnlWatch(const RtnlWatch&) = delete;
    RtnlWatch& operator=(const RtnlWatch&) = delete;
    bool ok() const { return sk_ != nullptr; }
    bool changed();
    uint64_t overflows() const { return overflows_; }

  private:
    nl_sock* sk_ = nullptr;
    uint64_t overflows_ = 0;
};

std::string format_prefix(Ip4 ip, uint8_t len);

} // namespace ztg
