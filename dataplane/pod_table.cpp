#include "dataplane/pod_table.hpp"

#include <rte_hash_crc.h>
#include <rte_lcore.h>

namespace ztg {

PodTable::PodTable(const std::string& name, uint32_t capacity, Rcu& rcu) : capacity_(capacity) {
    rte_hash_parameters p{};
    p.name = name.c_str();
    p.entries = capacity < 8 ? 8 : capacity;
    p.key_len = sizeof(uint32_t);
    p.hash_func = rte_hash_crc;
    p.hash_func_init_val = 0;
    p.socket_id = int(rte_socket_id());
    // Lock-free concurrent readers; the extendable table guarantees `capacity` fits
    // whatever the hash distribution.
    p.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_EXT_TABLE;
    h_ = rte_hash_create(&p);
    if (h_ == nullptr) return;
    rte_hash_rcu_config rc{};
    rc.v = rcu.get();
    rc.mode = RTE_HASH_QSBR_MODE_DQ;
    if (rte_hash_rcu_qsbr_add(h_, &rc) != 0) {
        rte_hash_free(h_);
        h_ = nullptr;
    }
}

PodTable::~PodTable() {
    rte_hash_free(h_);
}

bool PodTable::add(Ip4 ip) {
    if (contains(ip)) return true;
    if (rte_hash_add_key(h_, &ip.raw) < 0) return false;
    size_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

bool PodTable::set_location(Ip4 ip, PodLocation loc) {
    if (!contains(ip)) return false;
    // Replacing the data of an existing key is one atomic store in RW_CONCURRENCY_LF mode.
    return rte_hash_add_key_data(h_, &ip.raw, reinterpret_cast<void*>(uintptr_t(loc.word))) >= 0;
}

bool PodTable::del(Ip4 ip) {
    if (rte_hash_del_key(h_, &ip.raw) < 0) return false;
    size_.fetch_sub(1, std::memory_order_relaxed);
    return true;
}

} // namespace ztg
