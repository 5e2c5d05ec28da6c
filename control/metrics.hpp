// The operator's HTTP endpoint (metrics.listen): /metrics in the Prometheus text format
// (0.0.4), /healthz and /readyz (200, or 503 with the reasons, one a line). Served by
// HttpServer's thread; the workers' counters are read lock-free (relaxed loads), what only
// the control thread may read is asked through Runtime::inbox().
#pragma once

#include <memory>
#include <string>

#include "config/config.hpp"
#include "config/result.hpp"
#include "control/health.hpp"
#include "control/http.hpp"

namespace ztg {

class Runtime;

// What the exposition takes from the config: copied at start, on the control thread (a
// reload replaces the config there, and cannot change these).
struct MetricsStatic {
    std::string role;
    uint32_t pod_capacity = 0;
};

// The exposition of every metric (README, Metrics and health).
std::string render_metrics(Runtime& rt, const MetricsStatic& fixed);

class MetricsEndpoint {
  public:
    explicit MetricsEndpoint(Runtime& rt) : rt_(rt) {}
    // After Runtime::start_workers. An error names metrics.listen.
    Status start(const MetricsConfig& cfg);
    void stop() { server_.stop(); }

  private:
    HttpReply handle(const std::string& target);
    Runtime& rt_;
    MetricsStatic fixed_;
    std::unique_ptr<Health> health_;
    HttpServer server_;
};

} // namespace ztg
