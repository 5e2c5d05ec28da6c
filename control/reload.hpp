// SIGHUP's decision: what changed between the running config and the file as it is now,
// and whether that may change while running. Pure; Runtime::reload applies it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace ztg {

struct ReloadPlan {
    // The first key (section) that changed and cannot change live, e.g. "tunnel" or
    // "ports[1]"; empty: the reload may be applied.
    std::string refused;
    // Pods to take out of and put into the table, in address order.
    std::vector<Ip4> remove, add;
};

// pods, log.level and kernel.poll_ms change live; anything else refuses the reload.
ReloadPlan plan_reload(const Config& running, const Config& next);

} // namespace ztg
