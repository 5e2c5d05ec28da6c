// A DPDK device as the config gives it (its devargs) and what its devargs say.
#pragma once

#include <optional>
#include <string>

namespace ztg {

struct DeviceInfo {
    std::string name; // "productpage" or "productpage.twin"
    std::string devargs;
    std::string key; // config key path, for messages
};

// The kernel interface a device's devargs name (iface=), if any, read as the PMDs read
// their arguments (rte_kvargs).
std::optional<std::string> devargs_iface(const std::string& devargs);

} // namespace ztg
