#include "control/eal.hpp"

#include <rte_eal.h>
#include <rte_errno.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iterator>
#include <thread>
#include <unistd.h>

namespace ztg {

std::vector<std::string> eal_arguments(const Config& cfg, const std::string& argv0,
                                       const std::string& prefix_override, int pid, unsigned ncpu) {
    const DpdkConfig& d = cfg.dpdk;
    std::vector<std::string> a = {argv0};
    std::string prefix = !prefix_override.empty() ? prefix_override
                         : !d.file_prefix.empty() ? d.file_prefix
                                                  : "ztgeneve-" + std::to_string(pid);
    a.push_back("--file-prefix=" + prefix);
    // lcore 0 is the control thread; worker i runs on lcore i, pinned to cpu i mod ncpu.
    // fmt, not "," + std::to_string(i): GCC 12 at -O3 raises a false -Wrestrict on
    // operator+(const char*, std::string&&) (GCC bug 105329), an error under -Werror.
    std::string lcores = "0@0";
    for (uint32_t i = 1; i <= d.workers; i++)
        fmt::format_to(std::back_inserter(lcores), ",{}@{}", i, i % ncpu);
    a.push_back("--lcores=" + lcores);
    a.push_back("-m");
    a.push_back(std::to_string(d.memory_mb));
    if (d.no_huge) a.push_back("--no-huge");
    a.push_back("--no-pci");
    a.push_back("--log-level=*:warning");
    for (const auto& p : cfg.ports) {
        a.push_back("--vdev=" + p.devargs);
        if (p.twin) a.push_back("--vdev=" + *p.twin);
    }
    for (const auto& e : d.eal_args) a.push_back(e);
    return a;
}

Status init_eal(const Config& cfg, const std::string& argv0, const std::string& prefix_override) {
    const unsigned ncpu = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::string> a = eal_arguments(cfg, argv0, prefix_override, getpid(), ncpu);
    std::string line;
    for (const auto& s : a) line += " " + s;
    spdlog::debug("EAL arguments:{}", line);
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    if (rte_eal_init(int(argv.size()), argv.data()) < 0)
        return err("DPDK EAL init failed (" + std::string(rte_strerror(rte_errno)) +
                   "); arguments:" + line);
    return Ok{};
}

} // namespace ztg
