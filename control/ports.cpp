#include "control/ports.hpp"

#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "control/ether.hpp"
#include "control/runtime.hpp"

namespace ztg {

Result<uint32_t> mbuf_count(const Config& cfg) {
    const uint32_t w = cfg.dpdk.workers;
    // Every device's rings full, plus what workers hold in flight, plus slack.
    size_t ndev = 0, nxsk = 0;
    for (const auto& p : cfg.ports)
        if (port_kind(p.kind).attach == Attach::Xdp)
            nxsk++;
        else
            ndev += p.twin ? 2 : 1;
    // A pool smaller than the rx rings it must fill leaves nothing to receive into: the
    // PMDs (net_tap first) would take every mbuf and the dataplane would stall silently.
    const uint32_t rings = uint32_t(ndev * w * kRxDesc + nxsk * w * kXskFillDesc);
    const uint32_t minimum = rings + w * 4 * kBurst + 1024;
    if (cfg.dpdk.mbufs != 0 && cfg.dpdk.mbufs < minimum)
        return err("dpdk.mbufs: " + std::to_string(cfg.dpdk.mbufs) +
                   " mbufs cannot fill the rx rings of " + std::to_string(ndev) + " devices (" +
                   std::to_string(rings) + " descriptors) and keep " + "packets moving; at least " +
                   std::to_string(minimum) + " are needed");
    return cfg.dpdk.mbufs != 0
               ? cfg.dpdk.mbufs
               : uint32_t(rings + (ndev + nxsk) * w * kTxDesc + w * 4 * kBurst + 2048);
}

Result<uint16_t> Runtime::open_device(const std::string& devargs, const std::string& key,
                                      DevKind kind) {
    const std::string name = device_name(devargs);
    uint16_t port_id;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port_id) != 0)
        return err(key + ": DPDK device '" + name +
                   "' did not probe (see the EAL message above; is the interface there?)");
    Device dev;
    dev.port_id = port_id;
    dev.kind = kind;
    topo_.devs.push_back(dev);
    return uint16_t(topo_.devs.size() - 1);
}

Status Runtime::setup_queues(uint16_t d) {
    Device& dev = topo_.devs[d];
    const DeviceInfo& inf = info_[d];
    const uint16_t q = uint16_t(cfg_.dpdk.workers);
    rte_eth_dev_info di;
    if (int rc = rte_eth_dev_info_get(dev.port_id, &di); rc != 0)
        return err(inf.key + ": cannot query device: " + rte_strerror(-rc));
    if (di.max_rx_queues < q || di.max_tx_queues < q)
        return err(inf.key + ": device '" + device_name(inf.devargs) + "' offers " +
                   std::to_string(di.max_rx_queues) + " rx / " + std::to_string(di.max_tx_queues) +
                   " tx queues; " + std::to_string(q) + " workers need " + std::to_string(q) +
                   " (net_af_packet: add qpairs=" + std::to_string(q) + ")");
    rte_eth_conf conf{};
    if (q > 1 && di.flow_type_rss_offloads != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf =
            (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & di.flow_type_rss_offloads;
    }
    if (int rc = rte_eth_dev_configure(dev.port_id, q, q, &conf); rc != 0)
        return err(inf.key + ": configuring '" + device_name(inf.devargs) +
                   "' failed: " + rte_strerror(-rc));
    uint16_t nrx = kRxDesc, ntx = kTxDesc;
    rte_eth_dev_adjust_nb_rx_tx_desc(dev.port_id, &nrx, &ntx);
    const int socket = rte_eth_dev_socket_id(dev.port_id);
    for (uint16_t i = 0; i < q; i++) {
        if (int rc = rte_eth_rx_queue_setup(dev.port_id, i, nrx, unsigned(socket), nullptr, pool_);
            rc != 0)
            return err(inf.key + ": rx queue " + std::to_string(i) +
                       " setup failed: " + rte_strerror(-rc));
        if (int rc = rte_eth_tx_queue_setup(dev.port_id, i, ntx, unsigned(socket), nullptr);
            rc != 0)
            return err(inf.key + ": tx queue " + std::to_string(i) +
                       " setup failed: " + rte_strerror(-rc));
    }
    if (int rc = rte_eth_dev_start(dev.port_id); rc != 0)
        return err(inf.key + ": starting '" + device_name(inf.devargs) +
                   "' failed: " + rte_strerror(-rc));
    started_[d] = true;
    if (port_kind(dev.kind).promiscuous)
        rte_eth_promiscuous_enable(dev.port_id); // frames for the twin's MAC
    rte_ether_addr mac;
    rte_eth_macaddr_get(dev.port_id, &mac);
    if (!workers_running_) dev.mac = mac; // workers read it: a re-created tap keeps its MAC
    return Ok{};
}

Status Runtime::open_ports() {
    const auto mbufs = mbuf_count(cfg_);
    if (!mbufs) return err(mbufs.error());
    pool_ = rte_pktmbuf_pool_create("ztg_mbufs", mbufs.value(), 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                    int(rte_socket_id()));
    if (pool_ == nullptr)
        return err("dpdk.memory_mb: cannot allocate " + std::to_string(mbufs.value()) + " mbufs (" +
                   rte_strerror(rte_errno) + "); raise dpdk.memory_mb or set dpdk.mbufs");

    for (size_t i = 0; i < cfg_.ports.size(); i++) {
        const PortConfig& p = cfg_.ports[i];
        const std::string key = "ports[" + std::to_string(i) + "]";
        const DevKind kind = p.kind;
        auto d = open_device(p.devargs, key + ".devargs", kind);
        if (!d) return err(d.error());
        info_.push_back({p.name, p.devargs, key + ".devargs"});
        if (port_kind(kind).link) topo_.link = *d;
        if (kind == DevKind::XdpUplink) topo_.xdp_uplink = *d;
        if (port_kind(kind).carries_vni) topo_.devs[*d].vni = *p.vni;
        if (p.twin) {
            auto t = open_device(*p.twin, key + ".twin", DevKind::Twin);
            if (!t) return err(t.error());
            info_.push_back({p.name + ".twin", *p.twin, key + ".twin"});
            topo_.devs[*d].peer = *t;
            topo_.devs[*t].peer = *d;
        }
    }
    started_.assign(topo_.devs.size(), false);
    present_.assign(topo_.devs.size(), true);
    for (uint16_t d = 0; d < topo_.devs.size(); d++)
        if (auto s = setup_queues(d); !s) return s;
    ring_stats_.find(info_);
    find_taps();
    segment_.attach(cfg_.ports);
    // A port answers to its twin's MAC, the address the kernel gives its neighbours,
    // unless the config names one.
    for (auto& dev : topo_.devs)
        if (dev.kind != DevKind::Twin && dev.peer != kNoDev) dev.mac = topo_.devs[dev.peer].mac;
    for (size_t d = 0, p = 0; d < topo_.devs.size(); d++) {
        if (topo_.devs[d].kind == DevKind::Twin) continue;
        if (cfg_.ports[p].mac) topo_.devs[d].mac = to_ether(*cfg_.ports[p].mac);
        p++;
    }
    return Ok{};
}

} // namespace ztg
