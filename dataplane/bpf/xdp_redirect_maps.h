// The values of xdp_redirect.c's maps, shared by the BPF programs and control
// (control/xdp_attach.cpp): plain C, fixed-width fields.
#pragma once

#include <linux/types.h>

#define ZTG_MAX_AGG 8      // aggregation devices (ports with attach: xdp)
#define ZTG_MAX_LINKS 1024 // links the programs run on
#define ZTG_NO_AGG 0xffffffffu

// ztg_config[0]: what the programs compare against. Control writes it whole before any link
// has a program (ready 0), then once more with ready 1 and every other field unchanged, so a
// program that reads it while it is written sees either state, never a mix of two settings.
struct ztg_cfg {
    __u32 zt_ip;          // tunnel.remote_ip, network order
    __u16 udp_port;       // tunnel.udp_port, network order
    __u8 ready;           // 1 once ztgeneve's sockets are bound; 0: everything to the kernel
    __u8 pad;
    __u8 protocols[32];   // redirect.protocols, one bit per IPv4 protocol number
    __u32 host_ip;        // tunnel.local_ip (the node's address), network order
    __u32 inbound_agg;    // the uplink port's index into ztg_agg; ZTG_NO_AGG: no inbound
    __u8 inbound_protocols[32]; // inbound.protocols, one bit per IPv4 protocol number
};

// ztg_links[ifindex], per CPU: the link's aggregation device and its counters.
struct ztg_link {
    __u64 to_ztgeneve; // redirected to the link's port's aggregation device (outbound, Geneve)
    __u64 to_kernel;   // not ztgeneve's: XDP_PASS
    __u64 no_socket;   // ztgeneve's, but no socket to take it (not ready, or no device): PASS
    __u32 agg;         // index into ztg_agg
    __u32 pad;
    __u64 inbound;     // to a meshed pod: redirected to the uplink port's aggregation device
};
