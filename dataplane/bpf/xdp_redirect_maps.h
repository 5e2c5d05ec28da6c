// The values of xdp_redirect.c's maps, shared by the BPF programs and control
// (control/xdp_attach.cpp): plain C, fixed-width fields.
#pragma once

#include <linux/types.h>

#define ZTG_MAX_AGG 8      // aggregation devices (ports with attach: xdp)
#define ZTG_MAX_LINKS 1024 // links the programs run on

// ztg_config[0]: what the programs compare against, written by control before `ready`.
struct ztg_cfg {
    __u32 zt_ip;          // tunnel.remote_ip, network order
    __u16 udp_port;       // tunnel.udp_port, network order
    __u8 ready;           // 1 once ztgeneve's sockets are bound; 0: everything to the kernel
    __u8 pad;
    __u8 protocols[32];   // redirect.protocols, one bit per IPv4 protocol number
};

// ztg_links[ifindex], per CPU: the link's aggregation device and its counters.
struct ztg_link {
    __u64 to_ztgeneve; // redirected to the aggregation device
    __u64 to_kernel;   // not ztgeneve's: XDP_PASS
    __u64 no_socket;   // ztgeneve's, but no socket to take it (not ready, or no device): PASS
    __u32 agg;         // index into ztg_agg
    __u32 pad;
};
