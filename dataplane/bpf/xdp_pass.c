// The XDP program ztgeneve attaches to the host end of a pod's veth (control/xdp_segment.cpp).
// It passes every frame: its only effect is the veth driver's reaction to an XDP program on
// one end, which takes TSO and GSO away from the other end (the pod's), so the pod's kernel
// segments to MTU-sized frames before they reach the packet socket of net_af_packet, which
// cannot take a frame larger than its ring's frames.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

SEC("xdp")
int ztg_xdp_pass(struct xdp_md* ctx) {
    (void)ctx;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
