// One QSBR variable shared by all workers: the pod table and the config snapshot are both
// reclaimed through it. Workers report a quiescent state once per poll round; the control
// thread (never a reader) waits for a grace period before freeing anything they could see.
#pragma once

#include <cstdint>
#include <memory>

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

namespace ztg {

class Rcu {
  public:
    explicit Rcu(uint32_t readers) : readers_(readers) {
        const size_t sz = rte_rcu_qsbr_get_memsize(readers);
        v_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("ztg_qsbr", sz, RTE_CACHE_LINE_SIZE));
        if (v_ != nullptr && rte_rcu_qsbr_init(v_, readers) != 0) {
            rte_free(v_);
            v_ = nullptr;
        }
    }
    ~Rcu() { rte_free(v_); }
    Rcu(const Rcu&) = delete;
    Rcu& operator=(const Rcu&) = delete;

    bool ok() const { return v_ != nullptr; }
    rte_rcu_qsbr* get() const { return v_; }
    uint32_t readers() const { return readers_; }

    // Reader side (worker lcore `id`).
    void reader_start(uint32_t id) {
        rte_rcu_qsbr_thread_register(v_, id);
        rte_rcu_qsbr_thread_online(v_, id);
    }
    void reader_stop(uint32_t id) {
        rte_rcu_qsbr_thread_offline(v_, id);
        rte_rcu_qsbr_thread_unregister(v_, id);
    }
    void quiescent(uint32_t id) { rte_rcu_qsbr_quiescent(v_, id); }

    // Writer side: returns once every online reader has passed a quiescent state.
    void synchronize() { rte_rcu_qsbr_synchronize(v_, RTE_QSBR_THRID_INVALID); }

  private:
    uint32_t readers_;
    rte_rcu_qsbr* v_ = nullptr;
};

} // namespace ztg
