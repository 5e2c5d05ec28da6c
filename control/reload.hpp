// SIGHUP's decision: what changed between the running config and the file as it is now,
// and whether that may change while running. Pure; Runtime::reload applies it.
#pragma once

#include <string>

#include "config/config.hpp"
#include "control/kernel/mirror.hpp"

namespace ztg {

struct ReloadPlan {
    // The first key (section) that changed and cannot change live, e.g. "tunnel" or
    // "ports[1]"; empty: the reload may be applied.
    std::string refused;
    // The pods to take out of and put into the table (none if refused).
    PodDiff pods;
};

// pods, log.level and kernel.poll_ms change live; anything else refuses the reload.
ReloadPlan plan_reload(const Config& running, const Config& next);

} // namespace ztg
