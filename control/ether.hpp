// MAC addresses between the config's form (Mac) and DPDK's (rte_ether_addr), and as text.
#pragma once

#include <cstring>
#include <string>

#include <rte_ether.h>

#include "config/config.hpp"

namespace ztg {

inline rte_ether_addr to_ether(const Mac& m) {
    rte_ether_addr a;
    std::memcpy(a.addr_bytes, m.data(), 6);
    return a;
}

inline std::string ether_str(const rte_ether_addr& a) {
    char b[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(b, sizeof b, &a);
    return b;
}

} // namespace ztg
