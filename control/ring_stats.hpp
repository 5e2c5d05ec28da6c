// The kernel's drop count of net_af_packet's rings: DPDK 22.11 does not read it
// (PACKET_STATISTICS), so the control thread does, for the counter drop_kernel_ring.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "control/devargs.hpp"

namespace ztg {

class RingStats {
  public:
    // Finds the AF_PACKET sockets of the net_af_packet devices among devs (by the
    // interface they are bound to) in the process's open files.
    void find(const std::vector<DeviceInfo>& devs);
    // Adds the drops since the last read (the kernel resets them on read); at most every
    // 100 ms unless force.
    void poll(bool force = false);
    // Stops reading: the sockets are about to close. drops() stays readable.
    void close() { sockets_.clear(); }
    // Drops counted so far for device dev; any thread.
    uint64_t drops(size_t dev) const {
        return drops_ ? drops_[dev].load(std::memory_order_relaxed) : 0;
    }

  private:
    std::vector<std::pair<int, size_t>> sockets_;    // fd, device
    std::unique_ptr<std::atomic<uint64_t>[]> drops_; // [device], written by control
    std::chrono::steady_clock::time_point next_{};
};

} // namespace ztg
