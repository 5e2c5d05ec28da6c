// ztgeneve's programs for ports with `attach: xdp` (control/xdp_attach.cpp, DESIGN.md "The
// live-node attach"). They run on links the kernel owns and decide, in the kernel, the little
// ztgeneve must see; everything else is XDP_PASS, the kernel's as if nothing were attached.
//
//   ztg_xdp_pods     on each pod's host veth: IPv4 of a redirected protocol from a meshed
//                    source (ztg_meshed, kept equal to ztgeneve's pod table), not to the
//                    ztunnel (table 101's direct route is the kernel's), not the pod's side of
//                    a connection the node's address opened (the kernel's conntrack says so:
//                    skip 0x220), goes to the link's aggregation device (ztg_agg), whose other
//                    end net_af_xdp reads. Anything else that is inbound (below) goes to the
//                    uplink port's aggregation device: a non-meshed pod's TCP to a meshed pod.
//   ztg_xdp_uplink   on the node's links toward clients outside it (inbound on): inbound only.
//   ztg_xdp_ztunnel  on ztunnel's host veth: Geneve from the ztunnel to our UDP port, likewise;
//                    with inbound on, also ztunnel's unencapsulated, unfragmented TCP from a
//                    source not its own (its connections for clients, `! -s ZT_IP -i ZT_VETH`
//                    -> connmark 0x210): ztgeneve learns them, so that the pods' replies on them
//                    return to ztunnel (mark 0x040, table 102), and delivers them.
//
// Inbound, as rule 103 / table 100 and the skips before it: IPv4 of inbound.protocols (TCP;
// never UDP, which the config refuses: the `-p udp` skip, Geneve to the tunnel port too) to a
// destination in ztg_meshed, not from the ztunnel IP, not from the node's address, with a TTL
// the kernel's forwarding would not end (TTL 1: the kernel answers time exceeded), goes to the
// uplink port's aggregation device, whose stage sends it into istioin (VNI 1000). Which device
// a frame arrives on is the whole of the kernel's decision: ztgeneve never classifies it again.
//   ztg_tc_agg       tc ingress of an aggregation device's kernel end, i.e. what ztgeneve
//                    sends: routed by the kernel's FIB (table main) to the pod's (or a
//                    client's) link,
//                    MACs from its neighbour table (bpf_redirect_neigh); nothing of the pod's
//                    side is needed, unlike an XDP redirect into a veth.
//   ztg_tc_ztunnel   the same for the ztunnel port's: everything ztgeneve sends there is for
//                    ztunnel (Geneve, direct, the proxied return whose destination is a
//                    client's address), so it goes out of ztunnel's link with the ztunnel IP as
//                    next hop, as table 101's and 102's `ZT_IP dev ZT_VETH` routes send it.
//
// Until control sets ztg_cfg.ready (the sockets are bound), and whenever the aggregation
// device is missing, frames go to the kernel and count as no_socket.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdp_redirect_maps.h"

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, ZTG_MAX_AGG);
    __type(key, __u32);
    __type(value, __u32);
} ztg_agg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536); // control sets limits.pods before loading
    __type(key, __u32);         // the pod's IPv4, network order
    __type(value, __u8);
} ztg_meshed SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ztg_cfg);
} ztg_config SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, ZTG_MAX_LINKS);
    __type(key, __u32); // ifindex of the link the program runs on
    __type(value, struct ztg_link);
} ztg_links SEC(".maps");

// The kernel's conntrack (kfuncs, Linux 6.0+ with CONFIG_NF_CONNTRACK): whether a pod's
// packet belongs to a connection the other side opened. The 12-byte options every kernel
// with these kfuncs takes. nf_conn is defined (never read) so that its BTF kind, a struct, is
// what libbpf matches against the kernel's (a forward declaration is refused).
struct nf_conn {
    int unused;
};
struct ztg_ct_opts {
    __s32 netns_id;
    __s32 error;
    __u8 l4proto;
    __u8 dir;
    __u8 reserved[2];
};
extern struct nf_conn* bpf_xdp_ct_lookup(struct xdp_md* ctx, struct bpf_sock_tuple* tuple,
                                         __u32 tuple_len, struct ztg_ct_opts* opts,
                                         __u32 opts_len) __ksym;
extern void bpf_ct_release(struct nf_conn* ct) __ksym;
#define ZTG_CT_DIR_REPLY 1

// The IPv4 header of an untagged IPv4 frame, or NULL.
static __always_inline struct iphdr* ipv4_of(void* data, void* end) {
    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return 0;
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > end || ip->ihl < 5) return 0;
    return ip;
}

static __always_inline int has(const __u8* bits, __u8 proto) {
    return bits[proto >> 3] & (1 << (proto & 7));
}

// To ztgeneve through aggregation device `agg`, counted on the link (in `counted`).
static __always_inline int to_ztgeneve(struct ztg_link* l, const struct ztg_cfg* c, __u32 agg,
                                       __u64* counted) {
    if (!c->ready) {
        l->no_socket++;
        return XDP_PASS;
    }
    const int rc = bpf_redirect_map(&ztg_agg, agg, XDP_PASS);
    if (rc == XDP_REDIRECT)
        (*counted)++;
    else
        l->no_socket++;
    return rc;
}

static __always_inline int to_kernel(struct ztg_link* l) {
    l->to_kernel++;
    return XDP_PASS;
}

// The settings and the link's entry (NULL for a link control did not add: pass).
static __always_inline struct ztg_link* link_of(struct xdp_md* ctx, const struct ztg_cfg** c) {
    __u32 key = 0, ifindex = ctx->ingress_ifindex;
    *c = bpf_map_lookup_elem(&ztg_config, &key);
    return *c ? bpf_map_lookup_elem(&ztg_links, &ifindex) : 0;
}

// Inbound (above): to the uplink port's aggregation device, or the kernel's.
static __always_inline int inbound(struct ztg_link* l, const struct ztg_cfg* c, struct iphdr* ip) {
    if (c->inbound_agg == ZTG_NO_AGG || !has(c->inbound_protocols, ip->protocol) ||
        ip->saddr == c->zt_ip || ip->saddr == c->host_ip || ip->ttl <= 1)
        return to_kernel(l);
    __u32 dst = ip->daddr;
    if (!bpf_map_lookup_elem(&ztg_meshed, &dst)) return to_kernel(l);
    return to_ztgeneve(l, c, c->inbound_agg, &l->inbound);
}

// A pod's unfragmented TCP to the node's address on a connection the node opened (a kubelet
// probe: the kernel's `ztunnel-OUTPUT -s HOST_IP` skip, 0x220 saved on the connection): the
// connection is in the kernel's conntrack with the pod's packet in its reply direction.
static __always_inline int host_opened(struct xdp_md* ctx, struct iphdr* ip, void* end) {
    if (ip->protocol != IPPROTO_TCP || (ip->frag_off & bpf_htons(0x3fff))) return 0;
    struct tcphdr* tcp = (void*)ip + ip->ihl * 4;
    if ((void*)(tcp + 1) > end) return 0;
    struct bpf_sock_tuple t = {};
    t.ipv4.saddr = ip->saddr;
    t.ipv4.daddr = ip->daddr;
    t.ipv4.sport = tcp->source;
    t.ipv4.dport = tcp->dest;
    struct ztg_ct_opts o = {.netns_id = -1, .l4proto = IPPROTO_TCP};
    struct nf_conn* ct = bpf_xdp_ct_lookup(ctx, &t, sizeof t.ipv4, &o, sizeof o);
    if (!ct) return 0;
    const int reply = o.dir == ZTG_CT_DIR_REPLY;
    bpf_ct_release(ct);
    return reply;
}

SEC("xdp")
int ztg_xdp_pods(struct xdp_md* ctx) {
    const struct ztg_cfg* c;
    struct ztg_link* l = link_of(ctx, &c);
    if (!l) return XDP_PASS;
    void* end = (void*)(long)ctx->data_end;
    struct iphdr* ip = ipv4_of((void*)(long)ctx->data, end);
    if (!ip) return to_kernel(l);
    __u32 src = ip->saddr;
    if (ip->daddr != c->zt_ip && has(c->protocols, ip->protocol) &&
        bpf_map_lookup_elem(&ztg_meshed, &src)) {
        if (ip->daddr == c->host_ip && host_opened(ctx, ip, end)) return to_kernel(l);
        return to_ztgeneve(l, c, l->agg, &l->to_ztgeneve);
    }
    return inbound(l, c, ip);
}

SEC("xdp")
int ztg_xdp_uplink(struct xdp_md* ctx) {
    const struct ztg_cfg* c;
    struct ztg_link* l = link_of(ctx, &c);
    if (!l) return XDP_PASS;
    struct iphdr* ip = ipv4_of((void*)(long)ctx->data, (void*)(long)ctx->data_end);
    return ip ? inbound(l, c, ip) : to_kernel(l);
}

SEC("xdp")
int ztg_xdp_ztunnel(struct xdp_md* ctx) {
    const struct ztg_cfg* c;
    struct ztg_link* l = link_of(ctx, &c);
    if (!l) return XDP_PASS;
    void* end = (void*)(long)ctx->data_end;
    struct iphdr* ip = ipv4_of((void*)(long)ctx->data, end);
    if (!ip) return to_kernel(l);
    const int fragment = ip->frag_off & bpf_htons(0x3fff);
    if (c->inbound_agg != ZTG_NO_AGG && ip->protocol == IPPROTO_TCP && ip->saddr != c->zt_ip &&
        !fragment)
        return to_ztgeneve(l, c, l->agg, &l->to_ztgeneve); // a connection for a client
    // A later fragment carries no UDP header: the kernel's (it has no Geneve; neither
    // does ztgeneve take fragmented Geneve).
    if (ip->protocol != IPPROTO_UDP || ip->saddr != c->zt_ip || fragment) return to_kernel(l);
    struct udphdr* udp = (void*)ip + ip->ihl * 4;
    if ((void*)(udp + 1) > end || udp->dest != c->udp_port) return to_kernel(l);
    return to_ztgeneve(l, c, l->agg, &l->to_ztgeneve);
}

// Out of the link of table main's route toward `dst` (not the policy rules: what ztgeneve
// sends is what the kernel routes with the skip mark, 0x200, rule 100's `goto main`; table
// 100 would send a pod's packets into istioin), to that route's next hop, its MAC from the
// kernel's neighbours (bpf_redirect_neigh resolves one it lacks).
static __always_inline int redirect_routed(struct __sk_buff* skb, struct iphdr* ip, __u32 dst) {
    struct bpf_fib_lookup f = {};
    f.family = 2; // AF_INET
    f.tos = ip->tos;
    f.l4_protocol = ip->protocol;
    f.tot_len = bpf_ntohs(ip->tot_len);
    f.ipv4_src = ip->saddr;
    f.ipv4_dst = dst;
    f.ifindex = skb->ingress_ifindex;
    const long rc = bpf_fib_lookup(skb, &f, sizeof f, BPF_FIB_LOOKUP_DIRECT);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) return TC_ACT_SHOT;
    struct bpf_redir_neigh nh = {.nh_family = 2, .ipv4_nh = f.ipv4_dst}; // the next hop
    return bpf_redirect_neigh(f.ifindex, &nh, sizeof nh, 0);
}

SEC("tc")
int ztg_tc_agg(struct __sk_buff* skb) {
    struct iphdr* ip = ipv4_of((void*)(long)skb->data, (void*)(long)skb->data_end);
    if (!ip) return TC_ACT_SHOT; // ztgeneve sends IPv4 only out of this device
    return redirect_routed(skb, ip, ip->daddr);
}

SEC("tc")
int ztg_tc_ztunnel(struct __sk_buff* skb) {
    __u32 key = 0;
    const struct ztg_cfg* c = bpf_map_lookup_elem(&ztg_config, &key);
    struct iphdr* ip = ipv4_of((void*)(long)skb->data, (void*)(long)skb->data_end);
    if (!c || !ip) return TC_ACT_SHOT;
    return redirect_routed(skb, ip, c->zt_ip);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
