#include "control/ring_stats.hpp"

#include <dirent.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>

#include <cstdlib>

namespace ztg {

void RingStats::find(const std::vector<DeviceInfo>& devs) {
    drops_ = std::make_unique<std::atomic<uint64_t>[]>(devs.size());
    std::vector<std::pair<unsigned, size_t>> ifaces; // ifindex, device
    for (size_t d = 0; d < devs.size(); d++) {
        const auto& a = devs[d].devargs;
        if (a.rfind("net_af_packet", 0) != 0) continue;
        if (const auto iface = devargs_iface(a))
            if (unsigned idx = if_nametoindex(iface->c_str()); idx != 0)
                ifaces.emplace_back(idx, d);
    }
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return;
    while (dirent* e = readdir(dir)) {
        const int fd = atoi(e->d_name);
        int domain = 0;
        socklen_t len = sizeof domain;
        if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 ||
            domain != AF_PACKET)
            continue;
        sockaddr_ll ll{};
        len = sizeof ll;
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&ll), &len) != 0) continue;
        for (const auto& [idx, d] : ifaces)
            if (unsigned(ll.sll_ifindex) == idx) sockets_.emplace_back(fd, d);
    }
    closedir(dir);
}

void RingStats::poll(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if ((!force && now < next_) || !drops_) return;
    next_ = now + std::chrono::milliseconds(100);
    for (const auto& [fd, d] : sockets_) {
        tpacket_stats st{};
        socklen_t len = sizeof st;
        if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0 &&
            st.tp_drops != 0) // read resets
            drops_[d].fetch_add(st.tp_drops, std::memory_order_relaxed);
    }
}

} // namespace ztg
