#include "control/devargs.hpp"

namespace ztg {

std::optional<std::string> devargs_iface(const std::string& devargs) {
    const auto at = devargs.find("iface=");
    if (at == std::string::npos) return std::nullopt;
    return devargs.substr(at + 6, devargs.find(',', at) - at - 6);
}

} // namespace ztg
