// Completion of checksums a pod left partial (CHECKSUM_PARTIAL: the field holds the
// pseudo-header sum): partial TCP and UDP get exactly the checksum DPDK computes for the
// packet, anything else keeps its bytes, whole or chained.
#include <gtest/gtest.h>

#include <random>

#include "dataplane/offload.hpp"
#include "tests/support/harness.hpp"

using namespace ztg;
using namespace ztg::test;

namespace {

struct Frame {
    std::vector<uint8_t> b;
    uint16_t l3 = 14;

    rte_ipv4_hdr* ip() { return reinterpret_cast<rte_ipv4_hdr*>(&b[l3]); }
    uint32_t l4() { return l3 + (b[l3] & 0xf) * 4u; }
    uint32_t field() { return l4() + (ip()->next_proto_id == IPPROTO_TCP ? 16 : 6); }
    uint16_t get() { return uint16_t(b[field()] | b[field() + 1] << 8); } // as in memory
    void set(uint16_t v) {
        b[field()] = uint8_t(v);
        b[field() + 1] = uint8_t(v >> 8);
    }
    uint16_t pseudo() { return rte_ipv4_phdr_cksum(ip(), 0); }
    // The checksum DPDK computes for the packet as it is now (field taken as 0).
    uint16_t complete() {
        const uint16_t keep = get();
        set(0);
        const uint16_t c = rte_ipv4_udptcp_cksum(ip(), &b[l4()]);
        set(keep);
        return c;
    }
    bool verifies() { return rte_ipv4_udptcp_cksum_verify(ip(), &b[l4()]) == 0; }
    // Sets the payload's 16-bit word at payload offset at (even) so that the packet's
    // complete checksum becomes want (in memory order).
    void steer(uint32_t at, uint16_t want) {
        const uint32_t off = l4() + (ip()->next_proto_id == IPPROTO_TCP ? 20 : 8) + at;
        b[off] = b[off + 1] = 0;
        const uint16_t keep = get();
        set(0);
        // ~(P + X + w) = want  =>  w = ~want - (P + X) in ones' complement.
        const uint32_t l4_len = uint32_t(b.size()) - l4();
        uint32_t px = uint32_t(pseudo()) + rte_raw_cksum(&b[l4()], l4_len);
        px = (px & 0xffff) + (px >> 16);
        px = (px & 0xffff) + (px >> 16);
        uint32_t w = uint32_t(uint16_t(~want)) + uint16_t(~px);
        w = (w & 0xffff) + (w >> 16);
        b[off] = uint8_t(w);
        b[off + 1] = uint8_t(w >> 8);
        set(keep);
    }
};

Frame tcp(uint16_t payload) {
    FrameSpec f;
    f.payload = payload;
    return Frame{make_frame(f)};
}

Frame udp(uint16_t payload) {
    FrameSpec f;
    f.proto = 17;
    f.dport = 53;
    f.payload = payload;
    return Frame{make_frame(f)};
}

// A frame whose IPv4 header carries 4 bytes of options (four NOPs).
Frame with_options(Frame f) {
    f.b.insert(f.b.begin() + f.l3 + 20, {1, 1, 1, 1});
    rte_ipv4_hdr* ip = f.ip();
    ip->version_ihl = 0x46;
    ip->total_length = rte_cpu_to_be_16(uint16_t(rte_be_to_cpu_16(ip->total_length) + 4));
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    return f;
}

struct OffloadTest : ::testing::Test {
    Harness h;

    // b in an mbuf cut into segments at the given offsets (increasing).
    rte_mbuf* mbuf(const std::vector<uint8_t>& b, std::vector<size_t> cuts = {}) {
        cuts.push_back(b.size());
        rte_mbuf* m = nullptr;
        size_t at = 0;
        for (size_t cut : cuts) {
            rte_mbuf* seg = h.frame({b.begin() + long(at), b.begin() + long(cut)});
            if (m == nullptr)
                m = seg;
            else
                EXPECT_EQ(rte_pktmbuf_chain(m, seg), 0);
            at = cut;
        }
        return m;
    }
    static std::vector<uint8_t> bytes(const rte_mbuf* m) {
        std::vector<uint8_t> out(m->pkt_len);
        const void* p = rte_pktmbuf_read(m, 0, m->pkt_len, out.data());
        if (p != out.data()) std::memcpy(out.data(), p, m->pkt_len);
        return out;
    }
    // Runs the completion over b (segmented at cuts); returns its verdict, b as it left.
    bool run(std::vector<uint8_t>& b, std::vector<size_t> cuts = {}) {
        rte_mbuf* m = mbuf(b, std::move(cuts));
        const Parsed p = parse_frame(m);
        // The stage completes only what parse flagged: the flag must never miss a partial.
        if (!p.csum_maybe_partial) {
            EXPECT_FALSE(l4_checksum_is_partial(m, p, l4_checksum_field(m, p)))
                << "parse said not partial";
        }
        const bool done = complete_partial_l4_checksum(m, p);
        if (done) {
            EXPECT_TRUE(p.csum_maybe_partial);
        }
        b = bytes(m);
        rte_pktmbuf_free(m);
        return done;
    }
};

// The partial packet completed to the checksum DPDK computes for it, nothing else touched.
void expect_completed(OffloadTest& t, Frame f, std::vector<size_t> cuts = {}) {
    const uint16_t want = f.complete();
    f.set(f.pseudo());
    ASSERT_FALSE(f.verifies()); // the input really is wrong as it stands
    Frame out = f;
    EXPECT_TRUE(t.run(out.b, std::move(cuts)));
    EXPECT_EQ(out.get(), want);
    EXPECT_TRUE(out.verifies());
    out.set(f.get());
    EXPECT_EQ(out.b, f.b) << "bytes other than the checksum changed";
}

// b keeps every byte and the completion says it did nothing.
void expect_untouched(OffloadTest& t, const std::vector<uint8_t>& b) {
    std::vector<uint8_t> out = b;
    EXPECT_FALSE(t.run(out));
    EXPECT_EQ(out, b);
}

TEST_F(OffloadTest, PseudoSumIsDpdks) {
    std::mt19937 gen(7);
    for (int i = 0; i < 100000; i++) {
        Parsed p;
        p.src = Ip4{uint32_t(gen())};
        p.dst = Ip4{uint32_t(gen())};
        p.proto = i % 2 ? IPPROTO_TCP : IPPROTO_UDP;
        const uint16_t l4_len = uint16_t(gen() % 65516);
        rte_ipv4_hdr ip{};
        ip.version_ihl = 0x45;
        ip.total_length = rte_cpu_to_be_16(uint16_t(l4_len + 20));
        ip.next_proto_id = p.proto;
        ip.src_addr = p.src.raw;
        ip.dst_addr = p.dst.raw;
        ASSERT_EQ(offload_detail::pseudo_sum(p, l4_len), rte_ipv4_phdr_cksum(&ip, 0)) << i;
    }
}

TEST_F(OffloadTest, PartialTcpIsCompleted) {
    expect_completed(*this, tcp(0)); // a SYN
    expect_completed(*this, tcp(10));
    expect_completed(*this, tcp(1446)); // a 1,500-byte frame
    expect_completed(*this, tcp(7));    // odd length
}

TEST_F(OffloadTest, PartialUdpIsCompleted) {
    expect_completed(*this, udp(5));
    expect_completed(*this, udp(1472)); // a 1,500-byte IPv4 packet
}

TEST_F(OffloadTest, VlanTagAndIpOptions) {
    FrameSpec s;
    s.vlan = 7;
    s.payload = 100;
    expect_completed(*this, Frame{make_frame(s), 18});
    expect_completed(*this, with_options(tcp(33)));
    expect_completed(*this, with_options(udp(33)));
}

// A hand-worked SYN: 10.244.2.3:40000 -> 10.96.0.10:9080, seq 1, window 64240, no payload.
// Pseudo sum 0af4 + 0203 + 0a60 + 000a + 0006 + 0014 (TCP length) = 177b, what a partial
// SYN carries; header words 9c40 + 2378 + 0000 + 0001 + 0000 + 0000 + 5002 + faf0 (+ the
// zero checksum and urgent pointer) = 2_0aab; with the pseudo sum 2_2226, folded 2228:
// checksum ~2228 = ddd7.
TEST_F(OffloadTest, HandWorkedSyn) {
    Frame f = tcp(0);
    f.b[f.field()] = 0x17;
    f.b[f.field() + 1] = 0x7b;
    ASSERT_EQ(f.get(), f.pseudo());
    EXPECT_TRUE(run(f.b));
    EXPECT_EQ(f.b[f.field()], 0xdd);
    EXPECT_EQ(f.b[f.field() + 1], 0xd7);
}

TEST_F(OffloadTest, CorrectChecksumIsLeftAsItIs) {
    for (Frame f : {tcp(0), tcp(1446), udp(5), udp(1472)}) {
        f.set(f.complete());
        ASSERT_TRUE(f.verifies());
        expect_untouched(*this, f.b);
    }
}

// A correct checksum that happens to equal the pseudo sum is completed, to itself.
TEST_F(OffloadTest, CorrectChecksumEqualToThePseudoSumIsRewrittenUnchanged) {
    for (Frame f : {tcp(100), udp(100)}) {
        f.steer(0, f.pseudo());
        f.set(f.complete());
        ASSERT_EQ(f.get(), f.pseudo());
        ASSERT_TRUE(f.verifies());
        std::vector<uint8_t> out = f.b;
        EXPECT_TRUE(run(out));
        EXPECT_EQ(out, f.b);
    }
}

TEST_F(OffloadTest, WrongChecksumThatIsNotPartialIsLeftForTheReceiver) {
    for (Frame f : {tcp(10), udp(10)}) {
        f.set(uint16_t(f.complete() + 1));
        ASSERT_NE(f.get(), f.pseudo());
        expect_untouched(*this, f.b);
    }
}

TEST_F(OffloadTest, UdpWithoutChecksumIsLeftAsItIs) {
    Frame f = udp(20);
    f.set(0);
    expect_untouched(*this, f.b);
}

// A sum that completes to 0 is written 0xFFFF, as skb_checksum_help does: for UDP 0 would
// mean "no checksum"; for TCP the two are the same value.
TEST_F(OffloadTest, ZeroResultIsWrittenAsFfff) {
    for (Frame f : {udp(20), tcp(20)}) {
        f.steer(4, 0);
        ASSERT_EQ(f.complete(), f.ip()->next_proto_id == IPPROTO_UDP ? 0xffff : 0);
        f.set(f.pseudo());
        EXPECT_TRUE(run(f.b));
        EXPECT_EQ(f.get(), 0xffff);
        EXPECT_TRUE(f.verifies());
    }
}

// Segments cut at odd offsets, inside the checksum field, and inside the L4 header.
TEST_F(OffloadTest, ChainedMbuf) {
    const Frame t = tcp(1946); // a 2,000-byte IPv4 packet (a pool buffer holds 2,048)
    const uint32_t field = Frame(t).field();
    expect_completed(*this, t, {100, 777, 1500});
    expect_completed(*this, t, {field + 1});
    expect_completed(*this, t, {40, field, field + 2});
    expect_completed(*this, udp(1000), {41, 999});
}

TEST_F(OffloadTest, FragmentIsLeftAsItIs) {
    for (int frag : {0x2000, 0x0010, 0x2010}) { // MF, offset 128, both
        FrameSpec s;
        s.payload = 100;
        s.frag = uint16_t(frag);
        Frame f{make_frame(s)};
        f.set(f.pseudo());
        expect_untouched(*this, f.b);
    }
}

TEST_F(OffloadTest, PacketNotWholeInTheMbufIsLeftAsItIs) {
    Frame f = tcp(1446);
    f.set(f.pseudo());
    rte_mbuf* m = mbuf(f.b, {1000});
    const Parsed p = parse_frame(m);
    ASSERT_TRUE(p.ipv4);
    truncate(m, 1200); // as net_af_packet cuts a frame larger than its ring's frame
    EXPECT_FALSE(complete_partial_l4_checksum(m, p));
    EXPECT_EQ(bytes(m), std::vector<uint8_t>(f.b.begin(), f.b.begin() + 1200));
    rte_pktmbuf_free(m);

    std::vector<uint8_t> cut(f.b.begin(), f.b.begin() + 1200); // what parse then refuses
    expect_untouched(*this, cut);
}

TEST_F(OffloadTest, L4HeaderShorterThanItsChecksumFieldIsLeftAsItIs) {
    Frame f = tcp(20);
    rte_ipv4_hdr* ip = f.ip();
    ip->total_length = rte_cpu_to_be_16(20 + 17); // 17 bytes of TCP: no room for a header
    ip->hdr_checksum = 0;
    ip->hdr_checksum = rte_ipv4_cksum(ip);
    f.set(f.pseudo()); // the pseudo sum with that length: it looks partial
    expect_untouched(*this, f.b);
}

TEST_F(OffloadTest, OtherProtocolsAreLeftAsTheyAre) {
    FrameSpec s;
    s.proto = 1; // ICMP
    s.payload = 30;
    expect_untouched(*this, make_frame(s));
    auto b = make_frame(FrameSpec{});
    b[12] = 0x86; // IPv6
    b[13] = 0xdd;
    expect_untouched(*this, b);
}

} // namespace
