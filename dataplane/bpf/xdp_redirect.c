// ztgeneve's programs for ports with `attach: xdp` (control/xdp_attach.cpp, DESIGN.md "The
// live-node attach"). They run on links the kernel owns and decide, in the kernel, the little
// ztgeneve must see; everything else is XDP_PASS, the kernel's as if nothing were attached.
//
//   ztg_xdp_pods     on each pod's host veth: IPv4 of a redirected protocol from a meshed
//                    source (ztg_meshed, kept equal to ztgeneve's pod table), not to the
//                    ztunnel (table 101's direct route is the kernel's), goes to the link's
//                    aggregation device (ztg_agg), whose other end net_af_xdp reads.
//   ztg_xdp_ztunnel  on ztunnel's host veth: Geneve from the ztunnel to our UDP port, likewise.
//   ztg_tc_agg       tc ingress of an aggregation device's kernel end, i.e. what ztgeneve
//                    sends: routed by the kernel's FIB to the pod's (or ztunnel's) own link,
//                    MACs from its neighbour table (bpf_redirect_neigh); nothing of the pod's
//                    side is needed, unlike an XDP redirect into a veth.
//
// Until control sets ztg_cfg.ready (the sockets are bound), and whenever the aggregation
// device is missing, frames go to the kernel and count as no_socket.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
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

// The IPv4 header of an untagged IPv4 frame, or NULL.
static __always_inline struct iphdr* ipv4_of(void* data, void* end) {
    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) return 0;
    struct iphdr* ip = (void*)(eth + 1);
    if ((void*)(ip + 1) > end || ip->ihl < 5) return 0;
    return ip;
}

// To ztgeneve through the link's aggregation device, counted on the link.
static __always_inline int to_ztgeneve(struct ztg_link* l, const struct ztg_cfg* c) {
    if (!c->ready) {
        l->no_socket++;
        return XDP_PASS;
    }
    const int rc = bpf_redirect_map(&ztg_agg, l->agg, XDP_PASS);
    if (rc == XDP_REDIRECT)
        l->to_ztgeneve++;
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

SEC("xdp")
int ztg_xdp_pods(struct xdp_md* ctx) {
    const struct ztg_cfg* c;
    struct ztg_link* l = link_of(ctx, &c);
    if (!l) return XDP_PASS;
    struct iphdr* ip = ipv4_of((void*)(long)ctx->data, (void*)(long)ctx->data_end);
    if (!ip || ip->daddr == c->zt_ip || !(c->protocols[ip->protocol >> 3] & (1 << (ip->protocol & 7))))
        return to_kernel(l);
    __u32 src = ip->saddr;
    if (!bpf_map_lookup_elem(&ztg_meshed, &src)) return to_kernel(l);
    return to_ztgeneve(l, c);
}

SEC("xdp")
int ztg_xdp_ztunnel(struct xdp_md* ctx) {
    const struct ztg_cfg* c;
    struct ztg_link* l = link_of(ctx, &c);
    if (!l) return XDP_PASS;
    void* end = (void*)(long)ctx->data_end;
    struct iphdr* ip = ipv4_of((void*)(long)ctx->data, end);
    // A later fragment carries no UDP header: the kernel's (it has no Geneve; neither
    // does ztgeneve take fragmented Geneve).
    if (!ip || ip->protocol != IPPROTO_UDP || ip->saddr != c->zt_ip ||
        (ip->frag_off & bpf_htons(0x3fff)))
        return to_kernel(l);
    struct udphdr* udp = (void*)ip + ip->ihl * 4;
    if ((void*)(udp + 1) > end || udp->dest != c->udp_port) return to_kernel(l);
    return to_ztgeneve(l, c);
}

SEC("tc")
int ztg_tc_agg(struct __sk_buff* skb) {
    void* data = (void*)(long)skb->data;
    void* end = (void*)(long)skb->data_end;
    struct iphdr* ip = ipv4_of(data, end);
    if (!ip) return TC_ACT_SHOT; // ztgeneve sends IPv4 only out of this device
    struct bpf_fib_lookup f = {};
    f.family = 2; // AF_INET
    f.tos = ip->tos;
    f.l4_protocol = ip->protocol;
    f.tot_len = bpf_ntohs(ip->tot_len);
    f.ipv4_src = ip->saddr;
    f.ipv4_dst = ip->daddr;
    f.ifindex = skb->ingress_ifindex;
    const long rc = bpf_fib_lookup(skb, &f, sizeof f, 0);
    if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) return TC_ACT_SHOT;
    return bpf_redirect_neigh(f.ifindex, 0, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
