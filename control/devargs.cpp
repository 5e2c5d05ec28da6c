#include "control/devargs.hpp"

#include <rte_kvargs.h>

namespace ztg {

std::optional<std::string> devargs_iface(const std::string& devargs) {
    const auto comma = devargs.find(',');
    if (comma == std::string::npos) return std::nullopt;
    // The device's arguments (after its name) as DPDK's PMDs parse them.
    rte_kvargs* kv = rte_kvargs_parse(devargs.c_str() + comma + 1, nullptr);
    if (kv == nullptr) return std::nullopt;
    std::optional<std::string> iface;
    if (const char* v = rte_kvargs_get(kv, "iface"); v != nullptr) iface = v;
    rte_kvargs_free(kv);
    return iface;
}

} // namespace ztg
