#include "control/drop_watch.hpp"

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

namespace ztg {

void DropWatch::check(const std::vector<DeviceInfo>& devs,
                      const std::function<uint64_t(size_t, Ctr)>& counter) {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    next_ = now + std::chrono::seconds(1);
    seen_.resize(devs.size(), 0);
    dropping_.resize(devs.size(), false);
    for (size_t d = 0; d < devs.size(); d++) {
        uint64_t total = 0;
        std::string what;
        for (size_t c = 0; c < kNumCtr; c++) {
            if (std::string_view(kCtrName[c]).rfind("drop_", 0) != 0) continue;
            const uint64_t v = counter(d, Ctr(c));
            total += v;
            if (v != 0)
                what +=
                    std::string(what.empty() ? "" : ", ") + kCtrName[c] + " " + std::to_string(v);
        }
        const uint64_t delta = total - seen_[d];
        seen_[d] = total;
        if (delta != 0 && !dropping_[d]) {
            spdlog::warn("{}: dropping frames ({}; see the counters' meaning in the README)",
                         devs[d].name, what);
            dropping_[d] = true;
        } else if (delta == 0 && dropping_[d]) {
            spdlog::info("{}: no more drops ({})", devs[d].name, what);
            dropping_[d] = false;
        }
    }
}

} // namespace ztg
