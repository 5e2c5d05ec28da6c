// Once a second: a device that starts dropping is logged once (with its drop counters),
// and again when it stops.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

#include "control/devargs.hpp"
#include "dataplane/counters.hpp"

namespace ztg {

class DropWatch {
  public:
    // counter(d, c): device d's counter c, summed over workers.
    void check(const std::vector<DeviceInfo>& devs,
               const std::function<uint64_t(size_t, Ctr)>& counter);

  private:
    std::vector<uint64_t> seen_; // [device] drops at the last check
    std::vector<bool> dropping_; // [device] it dropped since the check before
    std::chrono::steady_clock::time_point next_{};
};

} // namespace ztg
