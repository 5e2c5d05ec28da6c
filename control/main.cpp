// ztgeneve: command line, start-up in order (config, EAL, ports, workers), the control
// loop until SIGINT/SIGTERM, then an orderly stop and the counters.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_pdump.h>

#include "config/config.hpp"
#include "control/kernel/mirror.hpp"
#include "control/metrics.hpp"
#include "control/runtime.hpp"

namespace {

constexpr const char* kUsage = R"(usage: ztgeneve --config FILE [--file-prefix NAME]
       ztgeneve ctl [--file-prefix NAME] [--json] devices|counters|pods|info ...
       ztgeneve --check FILE
       ztgeneve --cleanup FILE
       ztgeneve --help | --version

  --config FILE       run the dataplane described by FILE (YAML, see config/README.md)
  --check FILE        validate FILE and exit: 0 if valid, 2 with the key and reason if not
  --cleanup FILE      remove the kernel objects that kernel.mode program installs for FILE
                      (foreign rules, routes and ipset members are left alone)
  --file-prefix NAME  DPDK runtime file prefix (overrides dpdk.file_prefix)
  ctl ...             look at a running instance (ztgeneve-ctl --help)

SIGHUP re-reads the config file: pods, log.level and kernel.poll_ms change live; any other
change is refused with the key that changed. On SIGINT or SIGTERM ztgeneve stops its
workers, closes its ports and prints its counters as one line 'ztgeneve-counters {json}'
on stdout. Live counters: DPDK telemetry /ztgeneve/devices and /ztgeneve/counters,<device>
on /var/run/dpdk/<file-prefix>/dpdk_telemetry.v2 (ztgeneve-ctl is its client). With
metrics.listen: /metrics (Prometheus), /healthz and /readyz over HTTP. With hugepages
(dpdk.no_huge: false), dpdk-dumpcap --file-prefix <file-prefix> -i <port> captures live.
)";

volatile std::sig_atomic_t g_signal = 0;
volatile std::sig_atomic_t g_reload = 0;

void on_signal(int sig) {
    g_signal = sig;
}
void on_hup(int) {
    g_reload = 1;
}

int fail(const std::string& msg, int code = 1) {
    std::fprintf(stderr, "ztgeneve: error: %s\n", msg.c_str());
    return code;
}

int run(const ztg::Config& cfg, const char* argv0, const std::string& prefix) {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    struct sigaction hup {};
    hup.sa_handler = on_hup;
    sigemptyset(&hup.sa_mask);
    sigaction(SIGHUP, &hup, nullptr);

    ztg::Runtime rt(cfg);
    if (auto s = rt.claim_interfaces(); !s) return fail(s.error());
    if (auto s = rt.init_eal(argv0, prefix); !s) return fail(s.error());
    // dpdk-dumpcap (a secondary process) asks us to copy a port's frames to it. Without
    // hugepages there is no memory a secondary could share: capture is unavailable then.
    const bool pdump = rte_pdump_init() == 0;
    if (!pdump)
        spdlog::debug("live capture (dpdk-dumpcap) unavailable: {}", rte_strerror(rte_errno));
    if (auto s = rt.open_ports(); !s) return fail(s.error());
    if (auto s = rt.start_workers(); !s) {
        rt.stop();
        return fail(s.error());
    }
    // An object the kernel refuses is logged and the dataplane runs on; an error here means
    // the mirror cannot do its job (e.g. program mode and an ipset of that name it cannot use).
    if (auto s = rt.start_kernel(); !s) {
        rt.stop();
        return fail("kernel: " + s.error());
    }
    ztg::telemetry_attach(&rt);
    ztg::MetricsEndpoint metrics(rt);
    if (auto s = metrics.start(cfg.metrics); !s) {
        ztg::telemetry_detach();
        rt.stop();
        return fail(s.error());
    }
    spdlog::info("running: {} worker(s), {} devices, {} pods, tunnel {} -> {} vni {}{} port {}",
                 cfg.dpdk.workers, rt.devices().size(), rt.pod_count(),
                 ztg::format_ip(cfg.tunnel.local_ip), ztg::format_ip(cfg.tunnel.remote_ip),
                 cfg.tunnel.vni,
                 cfg.inbound.enabled ? fmt::format(" (inbound {})", cfg.inbound.vni) : "",
                 cfg.tunnel.udp_port);
    while (g_signal == 0) {
        if (g_reload != 0) {
            g_reload = 0;
            if (auto s = rt.reload(); !s) spdlog::error("reload refused: {}", s.error());
        }
        rt.poll_events();
        rt.inbox().serve();       // questions from telemetry and metrics
        rte_delay_us_sleep(1000); // events (a pod's MAC, the peer's) apply within ~1 ms
    }
    spdlog::info("signal {}: stopping", int(g_signal));
    rt.inbox().close(); // nobody waits on a control thread that is going away
    metrics.stop();
    ztg::telemetry_detach();
    rt.stop();
    if (pdump) rte_pdump_uninit();
    std::printf("ztgeneve-counters %s\n", rt.counters_json().c_str());
    std::fflush(stdout);
    std::fputs(rt.counters_table().c_str(), stderr);
    return 0;
}

} // namespace

// `ztgeneve ctl ...`: the operator's tool, installed beside the binary (in the build tree:
// control/ztgeneve-ctl beside build/ztgeneve).
int run_ctl(char** argv) {
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return fail("ctl: cannot find my own binary", 1);
    std::string dir(self, size_t(n));
    dir.resize(dir.rfind('/'));
    for (const std::string& path : {dir + "/ztgeneve-ctl", dir + "/control/ztgeneve-ctl"}) {
        if (access(path.c_str(), X_OK) != 0) continue;
        argv[0] = const_cast<char*>(path.c_str());
        execv(path.c_str(), argv);
        return fail("ctl: cannot run " + path + ": " + std::strerror(errno), 1);
    }
    return fail("ctl: ztgeneve-ctl is not installed beside " + dir + "/ztgeneve", 1);
}

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "ctl") return run_ctl(argv + 1);
    std::string config, check, cleanup, prefix;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&](std::string& out) {
            if (i + 1 >= argc) return false;
            out = argv[++i];
            return true;
        };
        if (a == "--help" || a == "-h") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--version") {
            std::printf("ztgeneve %s\n", ZTG_VERSION);
            return 0;
        } else if (a == "--config") {
            if (!value(config)) return fail("--config needs a file", 64);
        } else if (a == "--check") {
            if (!value(check)) return fail("--check needs a file", 64);
        } else if (a == "--cleanup") {
            if (!value(cleanup)) return fail("--cleanup needs a file", 64);
        } else if (a == "--file-prefix") {
            if (!value(prefix)) return fail("--file-prefix needs a name", 64);
        } else {
            std::fputs(kUsage, stderr);
            return fail("unknown argument '" + a + "'", 64);
        }
    }
    if (int(!check.empty()) + int(!config.empty()) + int(!cleanup.empty()) != 1) {
        std::fputs(kUsage, stderr);
        return fail("give exactly one of --config FILE, --check FILE or --cleanup FILE", 64);
    }
    const std::string file = !config.empty() ? config : !check.empty() ? check : cleanup;
    auto cfg = ztg::load_config(file);
    if (!cfg) {
        std::fprintf(stderr, "ztgeneve: config error: %s\n", cfg.error().c_str());
        return 2;
    }
    if (!cleanup.empty()) {
        if (auto s = ztg::KernelMirror::cleanup(*cfg); !s) return fail("cleanup: " + s.error());
        std::printf("cleanup: removed what kernel.mode program installs for %s\n", cleanup.c_str());
        return 0;
    }
    if (!check.empty()) {
        std::printf("config OK: %s (%zu ports, %zu pods)\n", check.c_str(), cfg->ports.size(),
                    cfg->pods.size());
        return 0;
    }
    auto logger = spdlog::stderr_color_mt("ztgeneve");
    logger->set_pattern("ztgeneve: %^%l%$: %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(cfg->log_level));
    return run(*cfg, argv[0], prefix);
}
