// IPv4 fragmentation (RFC 791 §3.2, as Linux's ip_fragment does it) for a redirected
// packet without DF that does not fit the tunnel: the kernel fragments before istioout
// encapsulates, so each fragment travels in its own Geneve frame. A slow path: the
// fragments are new mbufs (copies), taken from the pool in one all-or-nothing bulk get.
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
// relative to m's own offset, and the last fragment keeps m's MF bit, so a fragment is
// split correctly too. The first fragment keeps every option; later ones keep those with
// the copied flag and the others become No-Operation (the header length stays). m is not
// changed. Makes nothing if the header checksum is wrong (fragments would carry a header
// made valid), the payload cannot be split into 8-byte units within max_len and the
// pool's buffer size, needs more than kMaxFragments, or would run past offset 65528.
Fragments fragment_ipv4(const rte_mbuf* m, const Parsed& p, uint16_t max_len, rte_mempool* pool,
                        rte_mbuf** out);

} // namespace ztg
