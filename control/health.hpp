// Liveness and readiness, for /healthz and /readyz (and the kernel's probes of them).
//   live:  every worker's poll-round counter (WorkerCtx::rounds) advanced within the last
//          kWorkerStall, and the control loop's within kControlStall;
//   ready: live, every configured port's link up, the tunnel peer's MAC resolved, and (kernel
//          mode observe/program) the first ipset sync done.
// sample() runs on the HTTP thread every kSamplePeriod; it only reads relaxed atomics.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

namespace ztg {

class Runtime;

struct Check {
    bool ok = true;
    std::vector<std::string> reasons; // why not, one line each
};

class Health {
  public:
    static constexpr std::chrono::milliseconds kSamplePeriod{100};
    static constexpr std::chrono::milliseconds kWorkerStall{1000};
    static constexpr std::chrono::milliseconds kControlStall{5000};

    explicit Health(Runtime& rt);
    void sample();
    Check live() const;
    Check ready() const; // asks the control thread (bounded)

  private:
    struct Beat {
        uint64_t last = 0;
        std::chrono::steady_clock::time_point when;
    };
    Runtime& rt_;
    mutable std::mutex mu_;
    std::vector<Beat> workers_;
    Beat control_;
};

} // namespace ztg
