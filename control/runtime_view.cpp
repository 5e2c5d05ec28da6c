// What the runtime shows other threads: the pod table with locations and the control
// thread's own state (links, next hop, kernel mirror), built on the control thread when
// asked through Runtime::inbox().
#include <rte_ethdev.h>
#include <rte_mempool.h>

#include <algorithm>
#include <cstring>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/runtime.hpp"

namespace ztg {

namespace {

// Lower case, as in the config and as `ip link` shows it.
std::string mac_str(const rte_ether_addr& a) {
    Mac m;
    std::copy(a.addr_bytes, a.addr_bytes + 6, m.begin());
    return format_mac(m);
}

// A kernel interface named by devargs (iface=...): up and with carrier (IFF_UP and
// IFF_RUNNING). net_af_packet does not follow its interface's link (it reports up from
// start), so the kernel is asked; -1: devargs name no interface.
int kernel_link_up(int fd, const std::string& devargs) {
    const auto at = devargs.find("iface=");
    if (at == std::string::npos || fd < 0) return -1;
    const std::string iface = devargs.substr(at + 6, devargs.find(',', at) - at - 6);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, iface.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) return 0; // gone
    return (ifr.ifr_flags & IFF_UP) != 0 && (ifr.ifr_flags & IFF_RUNNING) != 0 ? 1 : 0;
}

} // namespace

unsigned Runtime::mbufs_total() const {
    return pool_ != nullptr ? pool_->size : 0;
}

std::vector<PodRow> Runtime::pod_rows() const {
    std::vector<PodRow> rows;
    if (!pods_) return rows;
    rows.reserve(pods_->size());
    pods_->for_each([&](Ip4 ip, PodLocation loc) {
        PodRow r;
        r.ip = ip;
        if (loc.known() && loc.dev() < info_.size()) {
            r.device = info_[loc.dev()].name;
            r.mac = mac_str(loc.mac());
        }
        rows.push_back(std::move(r));
    });
    std::sort(rows.begin(), rows.end(),
              [](const PodRow& a, const PodRow& b) { return Ip4Order{}(a.ip, b.ip); });
    return rows;
}

ControlStatus Runtime::control_status() const {
    ControlStatus s;
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (size_t d = 0; d < topo_.devs.size(); d++) {
        bool up = false;
        if (d < present_.size() && present_[d] && topo_.devs[d].in_service.get()) {
            rte_eth_link link{};
            up = rte_eth_link_get_nowait(topo_.devs[d].port_id, &link) == 0 &&
                 link.link_status == RTE_ETH_LINK_UP;
            if (d < info_.size())
                if (const int k = kernel_link_up(fd, info_[d].devargs); k >= 0) up = up && k == 1;
        }
        s.link_up.push_back(up);
        s.is_port.push_back(topo_.devs[d].kind != DevKind::Twin);
    }
    if (fd >= 0) close(fd);
    s.nexthop_known = nexthop_.has_value();
    if (nexthop_) s.nexthop_mac = mac_str(*nexthop_);
    if (mirror_) {
        s.kernel_mirror = true;
        const auto last = mirror_->last_sync();
        s.kernel_synced = last != std::chrono::steady_clock::time_point{};
        if (s.kernel_synced)
            s.kernel_sync_age_s =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - last).count();
        s.kernel_sync_errors = mirror_->sync_errors();
        s.kernel_observe = cfg_.kernel.mode == KernelMode::Observe;
        s.kernel_present = mirror_->present();
        s.kernel_missing = mirror_->missing();
        s.kernel_different = mirror_->different();
    }
    if (pods_)
        pods_->for_each([&](Ip4, PodLocation loc) { s.pods_located += loc.known() ? 1 : 0; });
    if (flows_) {
        s.flow_table = true;
        s.flows = flows_->size();
        s.flows_capacity = flows_->capacity();
        s.flows_expired = flows_->expired();
    }
    return s;
}

} // namespace ztg
