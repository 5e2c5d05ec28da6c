// The snapshot the workers read, built from the config, the topology (device kinds, the
// link's MAC, each tunnel tap's VNI) and the tunnel peer's MAC if known. Pure: no DPDK
// calls, no I/O; Runtime publishes what it returns, tests build their snapshots with it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include <rte_ether.h>

#include "config/config.hpp"
#include "dataplane/snapshot.hpp"
#include "dataplane/worker.hpp"

namespace ztg {

std::unique_ptr<Snapshot> build_snapshot(const Config& cfg, const Topology& topo,
                                         const std::optional<rte_ether_addr>& nexthop,
                                         uint64_t generation);

} // namespace ztg
