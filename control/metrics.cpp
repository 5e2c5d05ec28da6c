#include "control/metrics.hpp"

#include <rte_version.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>

#include "control/runtime.hpp"

namespace ztg {

namespace {

// Label values: backslash, double quote and newline escaped (the text format's rule).
std::string esc(const std::string& s) {
    std::string o;
    for (char ch : s) {
        if (ch == '\\' || ch == '"')
            o += '\\', o += ch;
        else if (ch == '\n')
            o += "\\n";
        else
            o += ch;
    }
    return o;
}

class Out {
  public:
    void family(const std::string& name, const char* type, const std::string& help) {
        name_ = name;
        s_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    }
    // labels: already formatted, e.g. device="x",worker="0" (may be empty)
    void sample(const std::string& labels, double v) {
        char num[32];
        std::snprintf(num, sizeof num, "%.17g", v);
        s_ += name_ + (labels.empty() ? "" : "{" + labels + "}") + " " + num + "\n";
    }
    void sample(const std::string& labels, uint64_t v) {
        s_ += name_ + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(v) + "\n";
    }
    std::string take() { return std::move(s_); }

  private:
    std::string s_, name_;
};

const double g_start_time = double(std::time(nullptr));

} // namespace

// Naming (https://prometheus.io/docs/practices/naming/): one family per counter,
// ztgeneve_<counter>_total{device,worker}, because a sum over all of a metric's labels must
// mean something, and rx + tx + drops of every kind does not; a device's total is
// sum by (device). drop_kernel_ring is counted by the control thread from the kernel (no
// worker label); events_lost belongs to a worker, not a device (no device label).
std::string render_metrics(Runtime& rt, const MetricsStatic& fixed) {
    Out o;
    const auto& devs = rt.devices();
    const size_t nw = rt.worker_count();
    auto dev_label = [&](size_t d) { return "device=\"" + esc(devs[d].name) + "\""; };
    auto worker_label = [](size_t w) { return "worker=\"" + std::to_string(w) + "\""; };

    o.family("ztgeneve_build_info", "gauge",
             "ztgeneve's version, the DPDK it runs on and its role (always 1)");
    o.sample("version=\"" + esc(ZTG_VERSION) + "\",dpdk=\"" + esc(rte_version()) + "\",role=\"" +
                 fixed.role + "\"",
             uint64_t(1));
    o.family("process_start_time_seconds", "gauge", "Start time of the process (Unix time)");
    o.sample("", g_start_time);

    for (size_t c = 0; c < kNumCtr; c++) {
        const Ctr k = Ctr(c);
        const std::string name = std::string("ztgeneve_") + kCtrName[c] + "_total";
        if (k == Ctr::events_lost) {
            o.family(name, "counter", kCtrHelp[c]);
            for (size_t w = 0; w < nw; w++) {
                uint64_t v = 0;
                for (size_t d = 0; d < devs.size(); d++) v += rt.worker_counter(w, d, k);
                o.sample(worker_label(w), v);
            }
            continue;
        }
        o.family(name, "counter", std::string("Frames: ") + kCtrHelp[c]);
        for (size_t d = 0; d < devs.size(); d++) {
            if (k == Ctr::drop_kernel_ring) {
                o.sample(dev_label(d), rt.counter(d, k));
                continue;
            }
            for (size_t w = 0; w < nw; w++)
                o.sample(dev_label(d) + "," + worker_label(w), rt.worker_counter(w, d, k));
        }
    }
    o.family("ztgeneve_worker_rounds_total", "counter",
             "Poll rounds a worker completed (the liveness check watches it advance)");
    for (size_t w = 0; w < nw; w++) o.sample(worker_label(w), rt.worker_rounds(w));

    o.family("ztgeneve_pod_table_pods", "gauge", "Pods in the pod table");
    o.sample("", uint64_t(rt.pod_count()));
    o.family("ztgeneve_pod_table_capacity", "gauge", "Pods the pod table can hold (limits.pods)");
    o.sample("", uint64_t(fixed.pod_capacity));
    o.family("ztgeneve_mempool_mbufs_in_use", "gauge",
             "mbufs taken from the pool: rx rings, in flight, tx rings");
    o.sample("", uint64_t(rt.mbufs_in_use()));
    o.family("ztgeneve_mempool_mbufs", "gauge", "mbufs in the pool");
    o.sample("", uint64_t(rt.mbufs_total()));

    Runtime* r = &rt;
    const auto st = rt.inbox().ask([r] { return r->control_status(); });
    o.family("ztgeneve_control_responsive", "gauge",
             "1 if the control thread answered this scrape within 1 s (else the metrics below "
             "are missing)");
    o.sample("", uint64_t(st ? 1 : 0));
    if (st) {
        o.family("ztgeneve_pod_table_located_pods", "gauge",
                 "Pods whose port and MAC were learned from their own traffic");
        o.sample("", uint64_t(st->pods_located));
        if (st->flow_table) {
            o.family("ztgeneve_flow_table_flows", "gauge",
                     "Connections in the flow table (proxied, and the node address's)");
            o.sample("", uint64_t(st->flows));
            o.family("ztgeneve_flow_table_capacity", "gauge",
                     "Connections the flow table can hold (inbound.flows.max)");
            o.sample("", uint64_t(st->flows_capacity));
            o.family(
                "ztgeneve_flow_table_expired_total", "counter",
                "Connections removed from the flow table: idle, or closed (FIN/RST) long enough");
            o.sample("", st->flows_expired);
        }
        o.family("ztgeneve_link_up", "gauge", "1 if the device's link is up");
        for (size_t d = 0; d < st->link_up.size() && d < devs.size(); d++)
            o.sample(dev_label(d), uint64_t(st->link_up[d] ? 1 : 0));
        o.family("ztgeneve_tunnel_next_hop_resolved", "gauge",
                 "1 if the tunnel peer's MAC is known (static or learned by ARP)");
        o.sample("", uint64_t(st->nexthop_known ? 1 : 0));
        if (st->kernel_mirror) {
            o.family("ztgeneve_kernel_sync_age_seconds", "gauge",
                     "Seconds since the kernel mirror last read (observe) or wrote (program) the "
                     "ipset successfully; absent before the first success");
            if (st->kernel_synced) o.sample("", st->kernel_sync_age_s);
            o.family("ztgeneve_kernel_sync_errors_total", "counter",
                     "ipset reads or writes of the kernel mirror that failed");
            o.sample("", st->kernel_sync_errors);
        }
        if (st->kernel_observe) {
            o.family("ztgeneve_kernel_reference_objects", "gauge",
                     "observe: objects of the reference node configuration (iptables chains and "
                     "jumps, ip rules 100-103, routes of tables 100-102, istioin/istioout) found "
                     "present, missing or different at the last read");
            o.sample("state=\"present\"", uint64_t(st->kernel_present));
            o.sample("state=\"missing\"", uint64_t(st->kernel_missing));
            o.sample("state=\"different\"", uint64_t(st->kernel_different));
        }
    }
    return o.take();
}

Status MetricsEndpoint::start(const MetricsConfig& cfg) {
    if (cfg.address.empty()) return Ok{};
    fixed_ = {rt_.config().role == Role::Node ? "node" : "endpoint", rt_.config().pod_capacity};
    health_ = std::make_unique<Health>(rt_);
    auto s = server_.start(
        cfg.address, cfg.port, [this](const std::string& t) { return handle(t); },
        [this] { health_->sample(); }, Health::kSamplePeriod);
    if (!s) return err("metrics.listen: " + s.error());
    const bool v6 = cfg.address.find(':') != std::string::npos;
    spdlog::info("metrics: http://{}{}{}:{}/metrics, /healthz, /readyz", v6 ? "[" : "", cfg.address,
                 v6 ? "]" : "", server_.port());
    return Ok{};
}

HttpReply MetricsEndpoint::handle(const std::string& target) {
    const std::string path = target.substr(0, target.find('?'));
    auto probe = [](const Check& c) {
        HttpReply r;
        r.status = c.ok ? 200 : 503;
        if (c.ok) r.body = "ok\n";
        for (const auto& why : c.reasons) r.body += why + "\n";
        return r;
    };
    if (path == "/metrics") {
        HttpReply r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = render_metrics(rt_, fixed_);
        return r;
    }
    if (path == "/healthz") return probe(health_->live());
    if (path == "/readyz") return probe(health_->ready());
    if (path == "/")
        return {200, "text/plain; charset=utf-8", "ztgeneve: /metrics /healthz /readyz\n"};
    return {404, "text/plain; charset=utf-8", "not found: " + path + "\n"};
}

} // namespace ztg
