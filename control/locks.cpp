#include "control/locks.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/devargs.hpp"

namespace ztg {

namespace {

const std::string kDir = "/run/ztgeneve";

} // namespace

InterfaceLocks::~InterfaceLocks() {
    for (int fd : fds_) close(fd);
}

Status InterfaceLocks::claim_one(const std::string& devargs, const std::string& key,
                                 unsigned long netns) {
    const auto iface = devargs_iface(devargs);
    if (!iface) return Ok{};
    const std::string path = kDir + "/" + std::to_string(netns) + "." + *iface + ".lock";
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return err(key + ": cannot create " + path + ": " + strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {};
        const ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        return err(key + ": interface " + *iface + " is in use by another ztgeneve" +
                   (n > 0 ? " (pid " + std::string(pid, size_t(n)) + ")" : "") +
                   " in this network namespace");
    }
    const std::string me = std::to_string(getpid());
    if (ftruncate(fd, 0) != 0 ||
        pwrite(fd, me.data(), me.size(), 0) < 0) { /* the lock is what matters */
    }
    fds_.push_back(fd);
    return Ok{};
}

Status InterfaceLocks::claim(const Config& cfg) {
    struct stat ns {};
    if (stat("/proc/self/ns/net", &ns) != 0)
        return err("cannot identify the network namespace: " + std::string(strerror(errno)));
    mkdir(kDir.c_str(), 0755);
    for (size_t i = 0; i < cfg.ports.size(); i++) {
        const std::string key = "ports[" + std::to_string(i) + "]";
        if (auto st = claim_one(cfg.ports[i].devargs, key + ".devargs", ns.st_ino); !st) return st;
        if (cfg.ports[i].twin)
            if (auto st = claim_one(*cfg.ports[i].twin, key + ".twin", ns.st_ino); !st) return st;
    }
    return Ok{};
}

} // namespace ztg
