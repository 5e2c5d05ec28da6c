#include <rte_ethdev.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control/ether.hpp"
#include "control/runtime.hpp"

namespace ztg {

namespace {

// An interface's MTU as the kernel has it now, 0 if it cannot be read.
unsigned kernel_mtu(const std::string& ifname) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    ifreq r{};
    std::strncpy(r.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
    const int rc = ioctl(fd, SIOCGIFMTU, &r);
    close(fd);
    return rc == 0 ? unsigned(r.ifr_mtu) : 0;
}

} // namespace

void Runtime::find_taps() {
    for (size_t d = 0; d < topo_.devs.size(); d++) {
        rte_eth_dev_info di;
        char name[IF_NAMESIZE];
        if (rte_eth_dev_info_get(topo_.devs[d].port_id, &di) != 0 ||
            std::strcmp(di.driver_name, "net_tap") != 0 || di.if_index == 0 ||
            if_indextoname(di.if_index, name) == nullptr)
            continue;
        Tap t{d, name, di.if_index, {}, kernel_mtu(name)};
        rte_eth_macaddr_get(topo_.devs[d].port_id, &t.mac);
        taps_.push_back(t);
    }
}

Status Runtime::recreate(Tap& t) {
    Device& dev = topo_.devs[t.dev];
    const std::string& devargs = info_[t.dev].devargs;
    const std::string name = device_name(devargs);
    if (present_[t.dev]) { // out of service already: no worker uses the port
        if (started_[t.dev]) rte_eth_dev_stop(dev.port_id);
        started_[t.dev] = false;
        if (int rc = rte_eal_hotplug_remove("vdev", name.c_str()); rc != 0)
            return err("removing DPDK device '" + name + "' failed: " + rte_strerror(-rc));
        present_[t.dev] = false;
    }
    const size_t comma = devargs.find(',');
    const std::string args = comma == std::string::npos ? "" : devargs.substr(comma + 1);
    if (int rc = rte_eal_hotplug_add("vdev", name.c_str(), args.c_str()); rc != 0)
        return err("probing '" + devargs + "' failed: " + rte_strerror(-rc));
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) {
        rte_eal_hotplug_remove("vdev", name.c_str());
        return err("DPDK device '" + name + "' probed but has no port");
    }
    present_[t.dev] = true;
    dev.port_id = port;
    if (int rc = rte_eth_dev_default_mac_addr_set(port, &t.mac); rc != 0) // neighbours know it
        spdlog::warn("{}: cannot give {} its MAC {} back: {}", info_[t.dev].name, t.ifname,
                     ether_str(t.mac), rte_strerror(-rc));
    if (auto s = setup_queues(uint16_t(t.dev)); !s) return s;
    if (t.mtu != 0)
        if (int rc = rte_eth_dev_set_mtu(port, uint16_t(t.mtu)); rc != 0)
            spdlog::warn("{}: cannot give {} its MTU {} back: {}", info_[t.dev].name, t.ifname,
                         t.mtu, rte_strerror(-rc));
    rte_eth_macaddr_get(port, &t.mac);
    t.ifindex = if_nametoindex(t.ifname.c_str());
    dev.in_service.v.store(true, std::memory_order_release);
    return Ok{};
}

void Runtime::watch_taps() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_tap_watch_) return;
    next_tap_watch_ = now + std::chrono::seconds(1);
    for (Tap& t : taps_) {
        Device& d = topo_.devs[t.dev];
        const unsigned index = if_nametoindex(t.ifname.c_str());
        const std::string& dev = info_[t.dev].name;
        if (d.in_service.get()) {
            if (index == t.ifindex) {
                if (unsigned mtu = kernel_mtu(t.ifname); mtu != 0 && mtu != t.mtu) {
                    spdlog::info("{}: {} has MTU {} (given back if it is re-created)", dev,
                                 t.ifname, mtu);
                    t.mtu = mtu;
                }
                continue;
            }
            spdlog::warn("{}: kernel interface {} is gone; re-creating it (frames for it count "
                         "as drop_tx_full meanwhile)",
                         dev, t.ifname);
            d.in_service.v.store(false, std::memory_order_release);
            rcu_->synchronize(); // no worker is in a burst on the port any more
        }
        // net_tap stops and closes by interface name: while another interface holds the
        // name, our port is left alone, or that interface would be set down.
        if (index != 0) {
            if (!t.waiting)
                spdlog::warn("{}: another interface holds the name {}; re-creating it once the "
                             "name is free",
                             dev, t.ifname);
            t.waiting = true;
            continue;
        }
        t.waiting = false;
        if (auto s = recreate(t); !s) {
            if (!t.failing)
                spdlog::error("{}: cannot re-create {}: {} (trying again every second)", dev,
                              t.ifname, s.error());
            t.failing = true;
            continue;
        }
        t.failing = false;
        spdlog::info("{}: {} re-created (ifindex {}, MAC {}, MTU {}); its addresses and routes "
                     "are for whoever configured them to restore",
                     dev, t.ifname, t.ifindex, ether_str(t.mac), t.mtu);
    }
}

} // namespace ztg
