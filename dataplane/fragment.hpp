// IPv4 fragmentation (RFC 791 §3.2) for a redirected packet without DF that does not fit
// the tunnel: the kernel fragments before istioout encapsulates, so each fragment travels
// in its own Geneve frame. A slow path around DPDK's rte_ipv4_fragment_copy_nonseg_packet
// (librte_ip_frag): the fragments are copies in new single-segment mbufs, so the tunnel
// headers can be prepended to each; ztgeneve adds the checks DPDK leaves to its caller.
#pragma once

#include <cstdint>

#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dataplane/parse.hpp"

namespace ztg {

// More would be needed only for a jumbo packet into a tunnel of the minimum MTU.
constexpr uint16_t kMaxFragments = 64;

struct Fragments {
    uint16_t n = 0;          // fragments written to out; 0: none made, because
    bool no_mbuf = false;    // the pool ran dry,
    bool bad_header = false; // or the header checksum is wrong (else: cannot be split)
};

// Splits the IPv4 packet that p describes in m into fragments of at most max_len bytes of
// IPv4 (header included), each a new single-segment mbuf from pool holding only that
// IPv4 fragment, with the pool's headroom in front for the tunnel headers. Offsets are
// relative to m's own offset and the last fragment keeps m's MF bit, so a fragment is
// split correctly too; later fragments carry only the options with the copied flag
// (DPDK's rule). m may be chained; it is left holding just its IPv4 packet (the caller
// frees it). Makes nothing (m untouched) if the header checksum is wrong (fragments would
// carry a header made valid) or the last offset would not fit, and nothing if the payload
// cannot be split into 8-byte units within max_len and the pool's buffer size or needs
// more than kMaxFragments; all or nothing if the pool runs dry.
Fragments fragment_ipv4(rte_mbuf* m, const Parsed& p, uint16_t max_len, rte_mempool* pool,
                        rte_mbuf** out);

} // namespace ztg
