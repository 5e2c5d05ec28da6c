// DPDK's EAL as the config asks for it: lcore 0 for the control thread, one lcore per
// worker, no PCI, every port and twin a --vdev.
#pragma once

#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/result.hpp"

namespace ztg {

// The EAL command line. prefix_override (--file-prefix) wins over dpdk.file_prefix; with
// neither it is ztgeneve-<pid>. Worker i runs on lcore i, pinned to cpu i mod ncpu.
std::vector<std::string> eal_arguments(const Config& cfg, const std::string& argv0,
                                       const std::string& prefix_override, int pid, unsigned ncpu);

// rte_eal_init with eal_arguments(); the error carries DPDK's reason and the arguments.
Status init_eal(const Config& cfg, const std::string& argv0, const std::string& prefix_override);

} // namespace ztg
