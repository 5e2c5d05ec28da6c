#include "config/config.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <yaml-cpp/yaml.h>

namespace ztg {

namespace {

// Thrown inside the parser only; load_config turns it into a Result.
struct ConfigError {
    std::string msg;
};

[[noreturn]] void fail(const std::string& key, const std::string& why) {
    throw ConfigError{key + ": " + why};
}

std::string join(const std::string& a, const std::string& b) {
    return a.empty() ? b : a + "." + b;
}
std::string idx(const std::string& a, size_t i) {
    return a + "[" + std::to_string(i) + "]";
}

std::string describe(const YAML::Node& n) {
    switch (n.Type()) {
    case YAML::NodeType::Scalar:
        return "'" + n.Scalar() + "'";
    case YAML::NodeType::Sequence:
        return "a list";
    case YAML::NodeType::Map:
        return "a mapping";
    case YAML::NodeType::Null:
        return "nothing";
    default:
        return "an undefined value";
    }
}

// A mapping whose keys are checked against the known ones; reading a key marks it used.
class Map {
  public:
    Map(const YAML::Node& n, std::string path) : n_(n), path_(std::move(path)) {
        if (!n.IsMap())
            fail(path_.empty() ? "(top level)" : path_, "expected a mapping, got " + describe(n));
    }
    YAML::Node get(const std::string& key) {
        used_.insert(key);
        const YAML::Node& n = n_; // const lookup: never inserts the key
        return n[key];
    }
    std::string path(const std::string& key) const { return join(path_, key); }
    void check_unknown(const std::set<std::string>& extra = {}) const {
        for (const auto& kv : n_) {
            const std::string k = kv.first.as<std::string>();
            if (!used_.count(k) && !extra.count(k)) fail(join(path_, k), "unknown key");
        }
    }

  private:
    YAML::Node n_;
    std::string path_;
    std::set<std::string> used_;
};

std::string scalar(const YAML::Node& n, const std::string& key) {
    if (!n.IsScalar()) fail(key, "expected a value, got " + describe(n));
    return n.Scalar();
}

uint64_t unsigned_in(const YAML::Node& n, const std::string& key, uint64_t lo, uint64_t hi) {
    const std::string s = scalar(n, key);
    uint64_t v = 0;
    int base = 10;
    const char* b = s.data();
    if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        b += 2;
    }
    auto [ptr, ec] = std::from_chars(b, s.data() + s.size(), v, base);
    if (ec != std::errc() || ptr != s.data() + s.size() || s.empty())
        fail(key, "expected an unsigned integer, got '" + s + "'");
    if (v < lo || v > hi)
        fail(key, s + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
}

bool boolean(const YAML::Node& n, const std::string& key) {
    const std::string s = scalar(n, key);
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    fail(key, "expected true or false, got '" + s + "'");
}

std::string text(const YAML::Node& n, const std::string& key) {
    std::string s = scalar(n, key);
    if (s.empty()) fail(key, "must not be empty");
    return s;
}

Ip4 ipv4(const YAML::Node& n, const std::string& key) {
    const std::string s = scalar(n, key);
    in_addr a{};
    if (inet_pton(AF_INET, s.c_str(), &a) != 1)
        fail(key, "'" + s + "' is not an IPv4 address (dotted quad)");
    return Ip4{a.s_addr}; // network byte order, as inet_pton writes it
}

Ip4 unicast_ipv4(const YAML::Node& n, const std::string& key) {
    const Ip4 ip = ipv4(n, key);
    const uint32_t h = ip.host();
    const uint8_t first = uint8_t(h >> 24);
    if (h == 0 || h == 0xFFFFFFFF || first == 0 || first == 127 || (first >= 224))
        fail(key, format_ip(ip) + " is not a unicast host address");
    return ip;
}

// "ADDR:PORT", "ADDR" (port kDefaultMetricsPort), "[V6]:PORT" or "[V6]": any address the operator
// gives (0.0.0.0 for every interface), checked here so that a typo fails at --check.
void parse_listen(const YAML::Node& n, const std::string& key, MetricsConfig& out) {
    const std::string s = text(n, key);
    std::string addr = s, port;
    if (s.front() == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos) fail(key, "'" + s + "': '[' without ']'");
        addr = s.substr(1, close - 1);
        if (close + 1 < s.size()) {
            if (s[close + 1] != ':') fail(key, "'" + s + "': expected ':PORT' after ']'");
            port = s.substr(close + 2);
        }
        in6_addr a6{};
        if (inet_pton(AF_INET6, addr.c_str(), &a6) != 1)
            fail(key, "'" + addr + "' is not an IPv6 address");
    } else {
        if (const auto colon = s.rfind(':'); colon != std::string::npos) {
            addr = s.substr(0, colon);
            port = s.substr(colon + 1);
        }
        in_addr a{};
        if (inet_pton(AF_INET, addr.c_str(), &a) != 1)
            fail(key, "'" + addr + "' is not an IPv4 address (IPv6: [ADDR]:PORT)");
    }
    out.address = addr;
    if (!port.empty()) {
        uint64_t v = 0;
        auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
        if (ec != std::errc() || ptr != port.data() + port.size() || v < 1 || v > 65535)
            fail(key, "'" + port + "' is not a port (1..65535)");
        out.port = uint16_t(v);
    }
}

Mac mac(const YAML::Node& n, const std::string& key) {
    const std::string s = scalar(n, key);
    Mac m{};
    unsigned v[6];
    char tail;
    if (s.size() != 17 || std::sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2],
                                      &v[3], &v[4], &v[5], &tail) != 6)
        fail(key, "'" + s + "' is not a MAC address (six hex pairs like 02:00:00:00:00:01)");
    for (int i = 0; i < 6; i++) m[size_t(i)] = uint8_t(v[i]);
    return m;
}

Mac unicast_mac(const YAML::Node& n, const std::string& key) {
    Mac m = mac(n, key);
    if (m[0] & 1) fail(key, format_mac(m) + " is a multicast/broadcast MAC");
    if (m == Mac{}) fail(key, "00:00:00:00:00:00 is not a usable MAC");
    return m;
}

template <class F>
void each(const YAML::Node& n, const std::string& key, F f) {
    if (!n.IsSequence()) fail(key, "expected a list, got " + describe(n));
    for (size_t i = 0; i < n.size(); i++) f(n[i], idx(key, i), i);
}

void parse_dpdk(Map m, DpdkConfig& d) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (auto n = m.get("workers"); n) {
        d.workers = uint32_t(unsigned_in(n, m.path("workers"), 1, 64));
        if (d.workers > cores)
            fail(m.path("workers"), std::to_string(d.workers) + " workers but this machine has " +
                                        std::to_string(cores) + " cores");
    }
    if (auto n = m.get("memory_mb"); n)
        d.memory_mb = uint32_t(unsigned_in(n, m.path("memory_mb"), 64, 1 << 20));
    if (auto n = m.get("no_huge"); n) d.no_huge = boolean(n, m.path("no_huge"));
    if (auto n = m.get("file_prefix"); n) {
        d.file_prefix = text(n, m.path("file_prefix"));
        if (d.file_prefix.find_first_of("/ \t") != std::string::npos)
            fail(m.path("file_prefix"), "must not contain '/' or spaces");
    }
    if (auto n = m.get("eal_args"); n)
        each(n, m.path("eal_args"), [&](const YAML::Node& e, const std::string& k, size_t) {
            std::string a = text(e, k);
            if (a == "--in-memory" && d.no_huge)
                fail(k, "--in-memory cannot be combined with no_huge (EAL refuses it)");
            d.eal_args.push_back(a);
        });
    if (auto n = m.get("idle_sleep_us"); n)
        d.idle_sleep_us = uint32_t(unsigned_in(n, m.path("idle_sleep_us"), 0, 100000));
    if (auto n = m.get("mbufs"); n)
        d.mbufs = uint32_t(unsigned_in(n, m.path("mbufs"), 1024, 1u << 24));
    if (auto n = m.get("fast_path"); n) {
        const std::string v = text(n, m.path("fast_path"));
        if (v != "vector" && v != "scalar")
            fail(m.path("fast_path"), "'" + v + "': vector or scalar");
        d.vector_path = v == "vector";
    }
    m.check_unknown();
}

// A link name as the kernel takes it (IFNAMSIZ).
bool link_name(const std::string& s) {
    return !s.empty() && s.size() <= 15 && s.find_first_of(" /:") == std::string::npos;
}

// A port with attach: xdp (port number i): its links; what a device port sets by hand
// (devargs, twin, segment) follows from the aggregation pair ztgeneve makes for it.
void parse_xdp_port(Map& m, size_t i, uint32_t workers, PortConfig& p) {
    for (const char* k : {"devargs", "twin", "segment"})
        if (m.get(k))
            fail(m.path(k), "not with attach: xdp (ztgeneve opens its own aggregation device)");
    auto links = m.get("links");
    if (!links)
        fail(m.path("links"), "required with attach: xdp (the kernel's links, e.g. "
                              "[veth1234abcd], or auto on a pods port)");
    if (links.IsScalar()) {
        const std::string v = scalar(links, m.path("links"));
        if (v != "auto")
            fail(m.path("links"), "expected a list of link names or auto, got '" + v + "'");
        if (p.kind != DevKind::XdpPods)
            fail(m.path("links"), p.kind == DevKind::XdpUplink
                                      ? "auto is for a pods port (the uplink port names the "
                                        "node's links toward clients outside it)"
                                      : "auto is for a pods port (the ztunnel port names "
                                        "ztunnel's veth)");
        p.links_auto = true;
    }
    std::set<std::string> seen;
    if (!p.links_auto)
        each(links, m.path("links"), [&](const YAML::Node& e, const std::string& k, size_t) {
            const std::string l = text(e, k);
            if (!link_name(l))
                fail(k, "'" + l + "' is not a link name (1 to 15 characters, no space, / or :)");
            if (!seen.insert(l).second) fail(k, "link '" + l + "' listed twice");
            p.links.push_back(l);
        });
    if (p.links.empty() && !p.links_auto) fail(m.path("links"), "at least one link");
    if (port_kind(p.kind).link && p.links.size() != 1)
        fail(m.path("links"), "the ztunnel port has exactly one link (ztunnel's veth), got " +
                                  std::to_string(p.links.size()));
    p.agg = "ztg" + std::to_string(i) + "k";
    p.agg_xsk = "ztg" + std::to_string(i) + "x";
    p.devargs = "net_af_xdp" + std::to_string(i) + ",iface=" + p.agg_xsk +
                ",start_queue=0,queue_count=" + std::to_string(workers);
}

void parse_ports(const YAML::Node& n, const std::string& key, Config& c) {
    std::map<std::string, std::string> devices; // device name -> key that used it
    std::map<std::string, std::string> names;
    each(n, key, [&](const YAML::Node& e, const std::string& k, size_t) {
        Map m(e, k);
        PortConfig p;
        auto name = m.get("name");
        if (!name) fail(m.path("name"), "required");
        p.name = text(name, m.path("name"));
        if (p.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos)
            fail(m.path("name"), "'" + p.name + "' may only use a-z, 0-9, '-' and '_'");
        if (auto [it, fresh] = names.emplace(p.name, m.path("name")); !fresh)
            fail(m.path("name"), "duplicate port name '" + p.name + "' (also " + it->second + ")");
        const bool node = c.role == Role::Node;
        std::string roles;
        for (const PortKind& pk : kPortKinds) {
            if (pk.role != c.role || pk.word.empty()) continue;
            const bool device = port_kind_of(pk.word, c.role, Attach::Device).has_value();
            if (pk.attach == Attach::Xdp && device) continue; // listed once, as a device role
            roles += (roles.empty() ? "" : " or ") + std::string(pk.word) +
                     (device ? "" : " (attach: xdp)");
        }
        auto role = m.get("role");
        if (!role) fail(m.path("role"), "required (" + roles + ")");
        const std::string r = scalar(role, m.path("role"));
        Attach attach = Attach::Device;
        if (auto a = m.get("attach"); a) {
            const std::string v = scalar(a, m.path("attach"));
            if (v != "device" && v != "xdp")
                fail(m.path("attach"), "expected device or xdp, got '" + v + "'");
            attach = v == "xdp" ? Attach::Xdp : Attach::Device;
        }
        if (!port_kind_of(r, c.role, Attach::Device) && !port_kind_of(r, c.role, Attach::Xdp))
            fail(m.path("role"), "'" + r + "' is not a port role of " +
                                     (node ? "a node" : "an endpoint") + " (" + roles + ")");
        const auto kind = port_kind_of(r, c.role, attach);
        if (!kind)
            fail(m.path("attach"), attach == Attach::Xdp
                                       ? "xdp is not an attach kind of role " + r
                                       : "role " + r +
                                             " of a node needs attach: xdp (the "
                                             "node's links toward clients outside it)");
        p.kind = *kind;
        if (auto v = m.get("vni"); v) {
            if (!port_kind(p.kind).carries_vni)
                fail(m.path("vni"), "only a port with role tunnel carries a vni");
            p.vni = uint32_t(unsigned_in(v, m.path("vni"), 0, (1u << 24) - 1));
        }
        auto use_device = [&](const std::string& devargs, const std::string& dk) {
            const std::string dev = device_name(devargs);
            if (dev.empty())
                fail(dk, "devargs must start with a device name, e.g. net_tap0,iface=x");
            if (auto [it, fresh] = devices.emplace(dev, dk); !fresh)
                fail(dk, "duplicate device '" + dev + "' (also " + it->second + ")");
        };
        if (attach == Attach::Xdp) {
            parse_xdp_port(m, c.ports.size(), c.dpdk.workers, p);
            use_device(p.devargs, m.path("attach"));
            m.check_unknown();
            c.ports.push_back(std::move(p));
            return;
        }
        if (m.get("links")) fail(m.path("links"), "only with attach: xdp");
        auto dev = m.get("devargs");
        if (!dev)
            fail(m.path("devargs"), "required (DPDK devargs, e.g. net_af_packet0,iface=veth0)");
        p.devargs = text(dev, m.path("devargs"));
        use_device(p.devargs, m.path("devargs"));
        if (auto t = m.get("twin"); t && !t.IsNull()) {
            p.twin = text(t, m.path("twin"));
            use_device(*p.twin, m.path("twin"));
        }
        if (auto mc = m.get("mac"); mc) p.mac = unicast_mac(mc, m.path("mac"));
        if (auto sg = m.get("segment"); sg) {
            const std::string v = scalar(sg, m.path("segment"));
            if (v != "kernel" && v != "off")
                fail(m.path("segment"), "expected kernel or off, got '" + v + "'");
            if (p.devargs.rfind("net_af_packet", 0) != 0)
                fail(m.path("segment"), "applies to net_af_packet ports only (devargs '" +
                                            device_name(p.devargs) + "')");
            p.segment = v == "kernel" ? Segment::Kernel : Segment::Off;
        }
        m.check_unknown();
        c.ports.push_back(std::move(p));
    });
    std::map<std::string, size_t> owner; // attach: xdp link -> port
    for (size_t i = 0; i < c.ports.size(); i++)
        for (const std::string& l : c.ports[i].links)
            if (auto [it, fresh] = owner.emplace(l, i); !fresh)
                fail(idx(key, i) + ".links",
                     "link '" + l + "' is ports[" + std::to_string(it->second) + "]'s already");
    const bool node = c.role == Role::Node;
    const char* link = node ? "ztunnel" : "uplink";
    if (auto found = std::count_if(c.ports.begin(), c.ports.end(),
                                   [](auto& p) { return port_kind(p.kind).link; });
        found != 1)
        fail(key, std::string("exactly one port with role ") + link + " is required, found " +
                      std::to_string(found));
    if (c.ports.size() < 2)
        fail(key, std::string("at least one port with role ") + (node ? "pods" : "tunnel") +
                      " is required");
}

void parse_tunnel(Map m, TunnelConfig& t, bool node) {
    if (auto n = m.get("vni"); n)
        t.vni = uint32_t(unsigned_in(n, m.path("vni"), 0, (1u << 24) - 1));
    if (auto n = m.get("udp_port"); n)
        t.udp_port = uint16_t(unsigned_in(n, m.path("udp_port"), 1, 65535));
    auto local = m.get("local_ip");
    if (!local) fail(m.path("local_ip"), "required (the node address, outer source)");
    t.local_ip = unicast_ipv4(local, m.path("local_ip"));
    auto remote = m.get("remote_ip");
    if (!remote) fail(m.path("remote_ip"), "required (the ztunnel pod address, outer destination)");
    t.remote_ip = unicast_ipv4(remote, m.path("remote_ip"));
    if (t.local_ip == t.remote_ip) fail(m.path("remote_ip"), "must differ from tunnel.local_ip");
    if (auto n = m.get("next_hop_mac"); n && !(n.IsScalar() && n.Scalar() == "arp"))
        t.next_hop_mac = unicast_mac(n, m.path("next_hop_mac"));
    if (auto n = m.get("arp_refresh_ms"); n)
        t.arp_refresh_ms = uint32_t(unsigned_in(n, m.path("arp_refresh_ms"), 100, 3600000));
    auto isrc = m.get("inner_src_mac");
    auto idst = m.get("inner_dst_mac");
    if (node) {
        if (!isrc) fail(m.path("inner_src_mac"), "required (the MAC of istioout)");
        t.inner_src_mac = unicast_mac(isrc, m.path("inner_src_mac"));
        if (!idst) fail(m.path("inner_dst_mac"), "required (the MAC of pistioout)");
        t.inner_dst_mac = unicast_mac(idst, m.path("inner_dst_mac"));
        if (auto n = m.get("inner_ip"); n) t.inner_ip = unicast_ipv4(n, m.path("inner_ip"));
        if (auto n = m.get("too_big"); n) {
            const std::string v = scalar(n, m.path("too_big"));
            if (v != "fragment" && v != "drop")
                fail(m.path("too_big"), "'" + v + "' is neither fragment nor drop");
            t.fragment = v == "fragment";
        }
    } else {
        for (const char* k : {"inner_src_mac", "inner_dst_mac", "inner_ip"})
            if (m.get(k))
                fail(m.path(k), "only for role node (the endpoint keeps the kernel's inner frame)");
        if (m.get("too_big"))
            fail(m.path("too_big"),
                 "only for role node (the endpoint's taps have the tunnel's MTU: the kernel "
                 "fragments)");
    }
    if (auto n = m.get("udp_checksum"); n) t.udp_checksum = boolean(n, m.path("udp_checksum"));
    if (auto n = m.get("mtu"); n) t.mtu = uint16_t(unsigned_in(n, m.path("mtu"), 576, 9216));
    m.check_unknown();
}

uint8_t protocol(const YAML::Node& n, const std::string& key) {
    static const std::map<std::string, uint8_t> names = {
        {"tcp", 6}, {"udp", 17}, {"icmp", 1}, {"sctp", 132}};
    const std::string s = scalar(n, key);
    if (auto it = names.find(s); it != names.end()) return it->second;
    if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit))
        return uint8_t(unsigned_in(n, key, 0, 255));
    fail(key, "'" + s + "' is not a protocol (tcp, udp, icmp, sctp or a number 0-255)");
}

void parse_inbound(Map m, Config& c) {
    InboundConfig& in = c.inbound;
    in.enabled = true;
    if (auto n = m.get("vni"); n)
        in.vni = uint32_t(unsigned_in(n, m.path("vni"), 0, (1u << 24) - 1));
    if (in.vni == c.tunnel.vni)
        fail(m.path("vni"), "must differ from tunnel.vni " + std::to_string(c.tunnel.vni));
    auto isrc = m.get("inner_src_mac");
    if (!isrc) fail(m.path("inner_src_mac"), "required (the MAC of istioin)");
    in.inner_src_mac = unicast_mac(isrc, m.path("inner_src_mac"));
    auto idst = m.get("inner_dst_mac");
    if (!idst) fail(m.path("inner_dst_mac"), "required (the MAC of pistioin)");
    in.inner_dst_mac = unicast_mac(idst, m.path("inner_dst_mac"));
    if (auto n = m.get("inner_ip"); n) in.inner_ip = unicast_ipv4(n, m.path("inner_ip"));
    if (in.inner_ip == c.tunnel.inner_ip)
        fail(m.path("inner_ip"), "must differ from tunnel.inner_ip (istioout's address)");
    if (auto p = m.get("protocols"); p) {
        in.protocols.clear();
        each(p, m.path("protocols"), [&](const YAML::Node& e, const std::string& k, size_t) {
            const uint8_t v = protocol(e, k);
            if (v == 17)
                fail(k, "UDP is never redirected inbound (the kernel's `-p udp` skip, mark 0x220)");
            if (std::find(in.protocols.begin(), in.protocols.end(), v) != in.protocols.end())
                fail(k, "protocol listed twice");
            in.protocols.push_back(v);
        });
    }
    if (auto f = m.get("flows"); f) {
        Map fm(f, m.path("flows"));
        if (auto n = fm.get("max"); n)
            in.max_flows = uint32_t(unsigned_in(n, fm.path("max"), 8, 1u << 24));
        if (auto n = fm.get("idle_timeout_s"); n)
            in.idle_timeout_s =
                uint32_t(unsigned_in(n, fm.path("idle_timeout_s"), 1, InboundConfig::kMaxTimeoutS));
        if (auto n = fm.get("closing_timeout_s"); n)
            in.closing_timeout_s = uint32_t(unsigned_in(n, fm.path("closing_timeout_s"), 1, 3600));
        if (auto n = fm.get("dns_idle_timeout_s"); n)
            in.dns_idle_timeout_s =
                uint32_t(unsigned_in(n, fm.path("dns_idle_timeout_s"), 1, 3600));
        fm.check_unknown();
    }
    if (auto n = m.get("dns_capture"); n) in.dns_capture = boolean(n, m.path("dns_capture"));
    if (in.dns_capture) {
        // attach: xdp: the links' programs hand ztgeneve no UDP (nor ztunnel's answers).
        for (size_t i = 0; i < c.ports.size(); i++)
            if (port_kind(c.ports[i].kind).attach == Attach::Xdp)
                fail(m.path("dns_capture"),
                     "not with attach: xdp (" + idx("ports", i) +
                         "): its programs pass no UDP to ztgeneve; there the kernel's DNAT "
                         "rule does it (kernel.mode program, kernel.dns_capture: true)");
        // program: the kernel is the fallback, and must capture too.
        if (c.kernel.mode == KernelMode::Program && !c.kernel.dns_capture)
            fail(m.path("dns_capture"),
                 "with kernel.mode program also set kernel.dns_capture: true (else the kernel "
                 "fallback would not capture DNS while the dataplane does)");
    }
    m.check_unknown();
}

// attach: xdp and inbound: the pods' programs hand ztgeneve the kernel's traffic to a meshed
// pod through the uplink port's aggregation device, so with an xdp pods port inbound needs
// one (exactly: the programs know one), and an uplink port is for inbound alone.
void check_xdp_uplink(const Config& c) {
    std::optional<size_t> uplink;
    bool xdp_pods = false;
    for (size_t i = 0; i < c.ports.size(); i++) {
        xdp_pods |= c.ports[i].kind == DevKind::XdpPods;
        if (c.ports[i].kind != DevKind::XdpUplink) continue;
        if (uplink)
            fail(idx("ports", i) + ".role",
                 "one uplink port only (ports[" + std::to_string(*uplink) +
                     "] is one already); list all the node's uplink links in its links");
        uplink = i;
        if (!c.inbound.enabled)
            fail(idx("ports", i) + ".role",
                 "uplink needs the inbound section (its links' traffic to meshed pods is "
                 "what goes into istioin)");
    }
    if (c.inbound.enabled && xdp_pods && !uplink)
        fail("inbound", "with a pods port attach: xdp, a port {role: uplink, attach: xdp, links: "
                        "[...]} is required: the node's links toward clients outside it (e.g. "
                        "[eth0]), through which the pods' programs also hand over a non-meshed "
                        "pod's traffic to a meshed pod");
}

Config parse(const YAML::Node& root, const std::string& source) {
    Config c;
    c.source = source;
    Map top(root, "");
    if (auto n = top.get("role"); n) {
        const std::string r = scalar(n, "role");
        if (r == "node")
            c.role = Role::Node;
        else if (r == "endpoint")
            c.role = Role::Endpoint;
        else
            fail("role", "'" + r + "' is not a role (node or endpoint)");
    } else {
        fail("role", "required (node or endpoint)");
    }
    if (auto n = top.get("dpdk"); n) parse_dpdk(Map(n, "dpdk"), c.dpdk);
    auto ports = top.get("ports");
    if (!ports) fail("ports", "required (one or more pods ports and one ztunnel port)");
    parse_ports(ports, "ports", c);
    auto tunnel = top.get("tunnel");
    if (!tunnel) fail("tunnel", "required (local_ip, remote_ip, inner MACs)");
    parse_tunnel(Map(tunnel, "tunnel"), c.tunnel, c.role == Role::Node);
    for (const PortConfig& p : c.ports)
        if (p.kind == DevKind::XdpZtunnel) {
            // The kernel's neighbour table gives ztunnel's MAC: the program that sends the
            // tunnel's frames out of ztunnel's link fills in both addresses (bpf_redirect_neigh).
            if (c.tunnel.next_hop_mac)
                fail("tunnel.next_hop_mac", "not with a ztunnel port attach: xdp (the kernel "
                                            "resolves ztunnel's MAC)");
            c.tunnel.next_hop_mac = Mac{};
        }
    for (const PortConfig& p : c.ports)
        // The aggregation pairs carry the tunnel's packets at tunnel.mtu; the kernel lets an
        // XDP program onto a veth only up to 3506 bytes (a page less headroom and skb_shared_info).
        if (port_kind(p.kind).attach == Attach::Xdp && c.tunnel.mtu > kXdpMaxMtu)
            fail("tunnel.mtu", std::to_string(c.tunnel.mtu) + " is above " +
                                   std::to_string(kXdpMaxMtu) +
                                   ", the largest MTU of a veth with XDP (ports with attach: xdp)");
    for (size_t i = 0; i < c.ports.size(); i++)
        if (port_kind(c.ports[i].kind).carries_vni) {
            if (!c.ports[i].vni) c.ports[i].vni = c.tunnel.vni;
            for (size_t j = 0; j < i; j++)
                if (port_kind(c.ports[j].kind).carries_vni && c.ports[j].vni == c.ports[i].vni)
                    fail(idx("ports", i) + ".vni", "VNI " + std::to_string(*c.ports[i].vni) +
                                                       " is carried by ports[" + std::to_string(j) +
                                                       "] already");
        }
    if (c.role == Role::Endpoint)
        for (const char* k : {"redirect", "pods", "limits"})
            if (top.get(k)) fail(k, "only for role node");
    if (auto n = top.get("redirect"); n) {
        Map r(n, "redirect");
        if (auto p = r.get("protocols"); p) {
            c.protocols.clear();
            each(p, "redirect.protocols", [&](const YAML::Node& e, const std::string& k, size_t) {
                const uint8_t v = protocol(e, k);
                if (std::find(c.protocols.begin(), c.protocols.end(), v) != c.protocols.end())
                    fail(k, "protocol listed twice");
                c.protocols.push_back(v);
            });
        }
        r.check_unknown();
    }
    if (auto n = top.get("limits"); n) {
        Map l(n, "limits");
        if (auto p = l.get("pods"); p)
            c.pod_capacity = uint32_t(unsigned_in(p, "limits.pods", 8, 1u << 26));
        l.check_unknown();
    }
    if (auto n = top.get("pods"); n && !n.IsNull()) {
        std::map<Ip4, std::string, Ip4Order> seen;
        each(n, "pods", [&](const YAML::Node& e, const std::string& k, size_t) {
            const Ip4 ip = unicast_ipv4(e, k);
            if (auto [it, fresh] = seen.emplace(ip, k); !fresh)
                fail(k, "duplicate pod " + format_ip(ip) + " (also " + it->second + ")");
            if (ip == c.tunnel.remote_ip)
                fail(k, format_ip(ip) + " is the ztunnel (tunnel.remote_ip)");
            c.pods.push_back(ip);
        });
        if (c.pods.size() > c.pod_capacity)
            fail("pods", std::to_string(c.pods.size()) + " pods exceed limits.pods " +
                             std::to_string(c.pod_capacity));
    }
    if (auto n = top.get("kernel"); n) {
        Map k(n, "kernel");
        KernelConfig& kc = c.kernel;
        if (auto v = k.get("mode"); v) {
            const std::string mode = scalar(v, "kernel.mode");
            if (mode == "off")
                kc.mode = KernelMode::Off;
            else if (mode == "observe")
                kc.mode = KernelMode::Observe;
            else if (mode == "program")
                kc.mode = KernelMode::Program;
            else
                fail("kernel.mode", "'" + mode + "' is not one of off, observe, program");
        }
        auto name = [&](const char* key, std::string& out) {
            if (auto v = k.get(key); v) {
                out = text(v, k.path(key));
                if (out.size() > 31 || out.find_first_of(" /") != std::string::npos)
                    fail(k.path(key), "'" + out + "' is not a valid name");
            }
        };
        name("ipset", kc.ipset);
        name("ztunnel_dev", kc.ztunnel_dev);
        name("istioout", kc.istioout);
        name("istioin", kc.istioin);
        for (const auto& [key, link] :
             {std::pair{"istioout", &kc.istioout}, {"istioin", &kc.istioin}})
            if (link->size() > 15) fail(k.path(key), "a link name has at most 15 characters");
        if (kc.istioin == kc.istioout)
            fail("kernel.istioin", "'" + kc.istioin + "' is also kernel.istioout");
        if (auto v = k.get("dns_capture"); v) kc.dns_capture = boolean(v, k.path("dns_capture"));
        if (auto v = k.get("poll_ms"); v)
            kc.poll_ms = uint32_t(unsigned_in(v, "kernel.poll_ms", 10, 10000));
        if (auto v = k.get("istioout_peer"); v)
            kc.istioout_peer = unicast_ipv4(v, "kernel.istioout_peer");
        k.check_unknown();
        if (kc.mode != KernelMode::Off && c.role != Role::Node)
            fail("kernel.mode", "only for role node");
        if (kc.mode == KernelMode::Program && kc.ztunnel_dev.empty())
            fail("kernel.ztunnel_dev",
                 "required with kernel.mode program (the kernel's link to ztunnel, for "
                 "table 101's `" +
                     format_ip(c.tunnel.remote_ip) + " dev <link> scope link`)");
        if (kc.mode == KernelMode::Observe && !c.pods.empty())
            fail("pods", "with kernel.mode observe the pods come from the ipset " + kc.ipset +
                             "; remove this list");
    }
    for (size_t i = 0, autos = 0; i < c.ports.size(); i++) {
        if (!c.ports[i].links_auto) continue;
        if (c.kernel.mode == KernelMode::Off)
            fail(idx("ports", i) + ".links",
                 "auto needs kernel.mode observe or program (the meshed pods, whose links it "
                 "finds, come from the kernel mirror)");
        if (++autos > 1)
            fail(idx("ports", i) + ".links", "auto on one pods port only (a discovered link "
                                             "would not know its port)");
    }
    if (auto n = top.get("inbound"); n) {
        if (c.role != Role::Node) fail("inbound", "only for role node");
        parse_inbound(Map(n, "inbound"), c);
    }
    check_xdp_uplink(c);
    if (auto n = top.get("metrics"); n) {
        Map m(n, "metrics");
        if (auto v = m.get("listen"); v) parse_listen(v, "metrics.listen", c.metrics);
        m.check_unknown();
    }
    if (auto n = top.get("log"); n) {
        Map l(n, "log");
        if (auto lv = l.get("level"); lv) {
            c.log_level = scalar(lv, "log.level");
            static const std::set<std::string> levels = {"trace", "debug", "info",
                                                         "warn",  "error", "off"};
            if (!levels.count(c.log_level))
                fail("log.level",
                     "'" + c.log_level + "' is not one of trace, debug, info, warn, error, off");
        }
        l.check_unknown();
    }
    top.check_unknown();
    return c;
}

} // namespace

std::string device_name(const std::string& devargs) {
    std::string d = devargs.substr(0, devargs.find(','));
    return d.find_first_of(" =") == std::string::npos ? d : std::string{};
}

std::string format_ip(Ip4 addr) {
    const uint32_t ip = addr.host();
    return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
           std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
}

std::string format_mac(const Mac& m) {
    char b[18];
    std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return b;
}

Result<Config> parse_config(const std::string& yaml_text, const std::string& source) {
    try {
        const YAML::Node root = YAML::Load(yaml_text);
        if (!root.IsDefined() || root.IsNull()) return err(source + ": the file is empty");
        return parse(root, source);
    } catch (const ConfigError& e) {
        return err(e.msg);
    } catch (const YAML::Exception& e) {
        return err(source + ":" + std::to_string(e.mark.line + 1) + ":" +
                   std::to_string(e.mark.column + 1) + ": YAML syntax: " + e.msg);
    }
}

Result<Config> load_config(const std::string& path) {
    std::ifstream f(path);
    if (!f) return err(path + ": cannot open the file");
    std::stringstream ss;
    ss << f.rdbuf();
    return parse_config(ss.str(), path);
}

} // namespace ztg
