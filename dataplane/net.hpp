// Byte-order-safe wrappers for header fields. A Be16/Be32 holds network byte order and
// converts only through host()/from_host(), so mixing the two orders does not compile.
#pragma once

#include <cstdint>

namespace ztg {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Be16/Be32 assume a little-endian host");

struct Be16 {
    uint16_t raw = 0; // network byte order
    static constexpr Be16 from_host(uint16_t v) { return Be16{__builtin_bswap16(v)}; }
    constexpr uint16_t host() const { return __builtin_bswap16(raw); }
    friend constexpr bool operator==(Be16, Be16) = default;
};

struct Be32 {
    uint32_t raw = 0; // network byte order
    static constexpr Be32 from_host(uint32_t v) { return Be32{__builtin_bswap32(v)}; }
    constexpr uint32_t host() const { return __builtin_bswap32(raw); }
    friend constexpr bool operator==(Be32, Be32) = default;
};

// An IPv4 address in network byte order: the form the pod table keys and headers use.
using Ip4 = Be32;

constexpr Ip4 ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    return Ip4::from_host(uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d);
}

} // namespace ztg
