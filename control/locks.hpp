// One ztgeneve per kernel interface and network namespace: a flock on
// /run/ztgeneve/<netns inode>.<iface>.lock, which the kernel drops when the process dies,
// so a restart after kill -9 just works.
#pragma once

#include <vector>

#include "config/config.hpp"
#include "config/result.hpp"

namespace ztg {

class InterfaceLocks {
  public:
    InterfaceLocks() = default;
    ~InterfaceLocks();
    InterfaceLocks(const InterfaceLocks&) = delete;
    InterfaceLocks& operator=(const InterfaceLocks&) = delete;

    // Every interface the ports' and twins' devargs name (iface=); held until destruction.
    // An error names the config key and, if known, the pid that holds the interface.
    Status claim(const Config& cfg);

  private:
    Status claim_one(const std::string& devargs, const std::string& key, unsigned long netns);
    std::vector<int> fds_;
};

} // namespace ztg
