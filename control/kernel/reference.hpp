// The node configuration of Istio's first ambient design for one config: what
// `kernel.mode: program` installs and what `observe` compares the kernel with (DESIGN.md,
// "What it replaces"). Pure: no system call, so the tests can take it apart.
//   HOST_IP = tunnel.local_ip, ZT_IP = tunnel.remote_ip, ZT_VETH = kernel.ztunnel_dev;
//   istioin 192.168.126.1/30 (peer pistioin .2), istioout tunnel.inner_ip/30 (peer
//   kernel.istioout_peer) are Istio's constants.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "control/kernel/ipset.hpp"
#include "control/kernel/iptables.hpp"
#include "control/kernel/netlink.hpp"

namespace ztg {

// Istio's marks (cni/pkg/ambient constants).
constexpr uint32_t kMarkOutbound = 0x100;    // a meshed pod's TCP: rule 101, table 101
constexpr uint32_t kMarkSkip = 0x200;        // route by the main table (rule 100)
constexpr uint32_t kMarkConnSkip = 0x220;    // skip, saved on the connection
constexpr uint32_t kMarkProxy = 0x210;       // ztunnel sending with a pod's source, saved
constexpr uint32_t kMarkProxyReturn = 0x040; // replies of 0x210 connections: rule 102
constexpr uint32_t kTableInbound = 100, kTableOutbound = 101, kTableProxyReturn = 102;
constexpr uint32_t kIstioinVni = 1000;
constexpr uint16_t kDnsCapturePort = 15053;
inline const Ip4 kIstioinAddr = ip4(192, 168, 126, 1), kIstioinPeer = ip4(192, 168, 126, 2);

// The mangle and nat rules, each chain's in the reference's order, the jumps from the
// built-in chains included; the DNS DNAT rule only with kernel.dns_capture (or `all`: with
// it whatever the config says, for --cleanup).
std::vector<IptRule> reference_iptables(const Config& c, bool all = false);
// ip rules 100, 101, 102, 103.
std::vector<RuleSpec> reference_rules();
// Tables 100 (ztunnel, then one route per pod in address order), 101 and 102.
std::vector<RouteSpec> reference_routes(const Config& c, const Ip4Set& pods);
constexpr uint32_t kReferenceTables[] = {kTableInbound, kTableOutbound, kTableProxyReturn};
// istioin (VNI 1000) and istioout (tunnel.vni).
std::vector<GeneveSpec> reference_links(const Config& c);

// What makes the routes of the reference's tables `want`, given what they hold: routes of
// ours (proto 250) that are no longer wanted or go another way are removed (and re-added),
// missing ones added; a foreign route to a wanted destination is left alone and reported.
struct RoutePlan {
    std::vector<RouteSpec> remove, add;
    std::vector<std::string> conflicts;
};
RoutePlan plan_routes(const std::vector<Rtnl::Route>& have, const std::vector<RouteSpec>& want);

// observe: the reference objects found in the kernel as they should be, missing, or
// there but different (each a line naming the object, and for `different` what is there).
struct KernelListing {
    std::vector<RuleSpec> rules;
    std::vector<RouteSpec> routes;                 // of the reference's tables
    std::map<std::string, IptTable> iptables;      // by table name
    std::map<std::string, Rtnl::GeneveInfo> links; // by name, the links that exist
};
struct Findings {
    std::vector<std::string> present, missing, different;
};
Findings compare_with_reference(const Config& c, const Ip4Set& pods, const KernelListing& have);

} // namespace ztg
