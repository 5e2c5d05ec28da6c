// CRC32-C (Castagnoli) of 4 and 8 bytes: the hash of the pod and flow tables and of the
// tunnel's UDP source port. Where the target has SSE4.2 (every -Dcpu: DPDK's baseline,
// corei7, has it) the compiler's crc32 intrinsic, which it can schedule and keep in
// registers; DPDK's rte_hash_crc_4byte/8byte compute the same function behind a test of
// the algorithm chosen at start, on every call, and an asm volatile. Elsewhere DPDK's.
#pragma once

#include <cstdint>

#ifdef __SSE4_2__
#include <nmmintrin.h>
#else
#include <rte_hash_crc.h>
#endif

namespace ztg {

inline uint32_t crc32c_4byte(uint32_t data, uint32_t init) {
#ifdef __SSE4_2__
    return _mm_crc32_u32(init, data);
#else
    return rte_hash_crc_4byte(data, init);
#endif
}

inline uint32_t crc32c_8byte(uint64_t data, uint32_t init) {
#ifdef __SSE4_2__
    return uint32_t(_mm_crc32_u64(init, data));
#else
    return rte_hash_crc_8byte(data, init);
#endif
}

} // namespace ztg
