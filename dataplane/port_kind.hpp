// The kinds of port, one row each: the word the config uses, how the port is attached
// (ports[].attach), the role that has it and how its device is set up. A new kind of port is one
// row here plus its stage in the role's pipeline (pipelines/node.cpp, pipelines/endpoint.cpp). No
// DPDK here: config/ uses it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ztg {

enum class Role : uint8_t { Node, Endpoint };

// No device (an index into the workers' device list).
constexpr uint16_t kNoDev = 0xFFFF;

// Twin is no config word: it is the kernel twin (a net_tap) of any port. XdpPods, XdpZtunnel
// and XdpUplink are the node's ports with `attach: xdp` (control/xdp_attach): ztgeneve's eBPF
// programs on the kernel's own links hand it only its traffic through an aggregation device.
// XdpUplink (inbound): the node's links toward clients outside it, whose traffic to a meshed
// pod goes into istioin; the pods' program hands a non-meshed pod's to it too.
enum class DevKind : uint8_t {
    Pods,
    Ztunnel,
    Uplink,
    Tunnel,
    Twin,
    XdpPods,
    XdpZtunnel,
    XdpUplink,
    count
};

// ports[].attach. Device: ztgeneve opens ports[].devargs and the kernel sees the link through
// a twin; Xdp: the links stay the kernel's, eBPF decides what ztgeneve receives.
enum class Attach : uint8_t { Device, Xdp };

struct PortKind {
    DevKind kind;
    std::string_view word;    // ports[].role in the config; empty: not configured as a port
    Attach attach;            // ports[].attach
    std::optional<Role> role; // the role that has it; none: every role
    bool link;                // the device toward the tunnel peer: exactly one per config
    bool promiscuous;         // receives frames for its twin's MAC, not only its own
    bool carries_vni;         // carries one VNI (ports[].vni)
    std::string_view xdp_program = {}; // attach: xdp: the program on its links (xdp_redirect.c)
    std::string_view tc_program = {};  // attach: xdp: on its aggregation device's kernel end
};

inline constexpr std::array<PortKind, size_t(DevKind::count)> kPortKinds = {{
    {DevKind::Pods, "pods", Attach::Device, Role::Node, false, true, false},
    {DevKind::Ztunnel, "ztunnel", Attach::Device, Role::Node, true, true, false},
    {DevKind::Uplink, "uplink", Attach::Device, Role::Endpoint, true, true, false},
    {DevKind::Tunnel, "tunnel", Attach::Device, Role::Endpoint, false, false, true},
    {DevKind::Twin, "", Attach::Device, std::nullopt, false, false, false},
    {DevKind::XdpPods, "pods", Attach::Xdp, Role::Node, false, false, false, "ztg_xdp_pods",
     "ztg_tc_agg"},
    {DevKind::XdpZtunnel, "ztunnel", Attach::Xdp, Role::Node, true, false, false, "ztg_xdp_ztunnel",
     "ztg_tc_ztunnel"},
    {DevKind::XdpUplink, "uplink", Attach::Xdp, Role::Node, false, false, false, "ztg_xdp_uplink",
     "ztg_tc_agg"},
}};

constexpr const PortKind& port_kind(DevKind k) {
    return kPortKinds[size_t(k)];
}

// The kind a config word names in a role with an attach kind, if any.
constexpr std::optional<DevKind> port_kind_of(std::string_view word, Role role,
                                              Attach attach = Attach::Device) {
    for (const PortKind& k : kPortKinds)
        if (!k.word.empty() && k.word == word && k.role == role && k.attach == attach)
            return k.kind;
    return std::nullopt;
}

static_assert(
    [] {
        for (size_t i = 0; i < kPortKinds.size(); i++)
            if (size_t(kPortKinds[i].kind) != i) return false;
        return true;
    }(),
    "kPortKinds is indexed by DevKind");

} // namespace ztg
