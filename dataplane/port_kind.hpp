// The kinds of port, one row each: the word the config uses, the role that has it and how
// its device is set up. A new kind of port is one row here plus its stage in the role's
// pipeline (pipelines/node.cpp, pipelines/endpoint.cpp). No DPDK here: config/ uses it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ztg {

enum class Role : uint8_t { Node, Endpoint };

// No device (an index into the workers' device list).
constexpr uint16_t kNoDev = 0xFFFF;

// Twin is no config word: it is the kernel twin (a net_tap) of any port.
enum class DevKind : uint8_t { Pods, Ztunnel, Uplink, Tunnel, Twin, count };

struct PortKind {
    DevKind kind;
    std::string_view word;    // ports[].role in the config; empty: not configured as a port
    std::optional<Role> role; // the role that has it; none: every role
    bool link;                // the device toward the tunnel peer: exactly one per config
    bool promiscuous;         // receives frames for its twin's MAC, not only its own
    bool carries_vni;         // carries one VNI (ports[].vni)
};

inline constexpr std::array<PortKind, size_t(DevKind::count)> kPortKinds = {{
    {DevKind::Pods, "pods", Role::Node, false, true, false},
    {DevKind::Ztunnel, "ztunnel", Role::Node, true, true, false},
    {DevKind::Uplink, "uplink", Role::Endpoint, true, true, false},
    {DevKind::Tunnel, "tunnel", Role::Endpoint, false, false, true},
    {DevKind::Twin, "", std::nullopt, false, false, false},
}};

constexpr const PortKind& port_kind(DevKind k) {
    return kPortKinds[size_t(k)];
}

// The kind a config word names in a role, if any.
constexpr std::optional<DevKind> port_kind_of(std::string_view word, Role role) {
    for (const PortKind& k : kPortKinds)
        if (!k.word.empty() && k.word == word && k.role == role) return k.kind;
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
