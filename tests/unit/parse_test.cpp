// The parser on ordinary, odd and truncated frames: it must classify well-formed IPv4 and
// refuse everything it cannot vouch for, without reading past the frame.
#include <gtest/gtest.h>

#include "dataplane/parse.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

struct ParseTest : ::testing::Test {
    Harness h;
    Parsed parse(const std::vector<uint8_t>& b) {
        rte_mbuf* m = h.frame(b);
        Parsed p = parse_frame(m);
        rte_pktmbuf_free(m);
        return p;
    }
};

TEST_F(ParseTest, PlainTcp) {
    FrameSpec f;
    const Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.l3_off, 14);
    EXPECT_EQ(p.ip_len, 40);
    EXPECT_EQ(p.proto, 6);
    EXPECT_EQ(p.src, ip4(10, 244, 2, 3));
    EXPECT_EQ(p.dst, ip4(10, 96, 0, 10));
    EXPECT_EQ(p.sport.host(), 40000);
    EXPECT_EQ(p.dport.host(), 9080);
    EXPECT_FALSE(p.fragment);
}

TEST_F(ParseTest, VlanTagged) {
    FrameSpec f;
    f.vlan = 42;
    const Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.l3_off, 18);
    EXPECT_EQ(p.dport.host(), 9080);
}

TEST_F(ParseTest, EthernetPaddingIsNotPartOfThePacket) {
    FrameSpec f;
    auto b = make_frame(f);
    b.resize(b.size() + 6, 0xee); // 54 -> 60 bytes: the minimum frame with padding
    const Parsed p = parse(b);
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.ip_len, 40);
}

TEST_F(ParseTest, NonIpv4IsNotIpv4) {
    auto b = make_frame(FrameSpec{});
    b[12] = 0x86; // IPv6 ethertype
    b[13] = 0xdd;
    EXPECT_FALSE(parse(b).ipv4);
    b[12] = 0x08; // ARP
    b[13] = 0x06;
    EXPECT_FALSE(parse(b).ipv4);
}

TEST_F(ParseTest, BadHeaderFieldsAreRefused) {
    auto base = make_frame(FrameSpec{});
    auto b = base;
    b[14] = 0x65; // version 6
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[14] = 0x44; // IHL 4 (16 bytes) is below the minimum
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[16] = 0x00; // total length 0x0010 < IHL*4
    b[17] = 0x10;
    EXPECT_FALSE(parse(b).ipv4);
    b = base;
    b[16] = 0x05; // total length 1280 lies: longer than the frame
    b[17] = 0x00;
    EXPECT_FALSE(parse(b).ipv4);
}

TEST_F(ParseTest, TruncatedAtEveryOffset) {
    FrameSpec f;
    f.vlan = 7;
    const auto full = make_frame(f);
    for (size_t len = 0; len < full.size(); len++) {
        std::vector<uint8_t> b(full.begin(), full.begin() + long(len));
        EXPECT_FALSE(parse(b).ipv4) << "length " << len;
    }
    EXPECT_TRUE(parse(full).ipv4);
}

TEST_F(ParseTest, IpOptionsMoveThePorts) {
    auto b = make_frame(FrameSpec{});
    // Insert 4 bytes of options (NOP NOP NOP EOL) after the 20-byte header; fix IHL/length.
    b.insert(b.begin() + 34, {1, 1, 1, 0});
    b[14] = 0x46;
    b[17] = 44;
    const Parsed p = parse(b);
    ASSERT_TRUE(p.ipv4);
    EXPECT_EQ(p.sport.host(), 40000);
    EXPECT_EQ(p.dport.host(), 9080);
}

TEST_F(ParseTest, FragmentsCarryNoPorts) {
    FrameSpec f;
    f.frag = 0x2000; // MF, offset 0: the first fragment
    Parsed p = parse(make_frame(f));
    ASSERT_TRUE(p.ipv4);
    EXPECT_TRUE(p.fragment);
    EXPECT_EQ(p.sport.raw, 0);
    f.frag = 0x0010; // a later fragment
    p = parse(make_frame(f));
    EXPECT_TRUE(p.fragment);
    EXPECT_EQ(p.dport.raw, 0);
}

} // namespace
