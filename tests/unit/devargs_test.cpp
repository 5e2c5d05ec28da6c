// The kernel interface named in a device's devargs: what the interface locks and the
// af_packet drop counters key on.
#include <gtest/gtest.h>

#include "control/devargs.hpp"

using ztg::devargs_iface;

TEST(Devargs, IfaceAmongOtherArguments) {
    EXPECT_EQ(devargs_iface("net_af_packet0,iface=veth0"), "veth0");
    EXPECT_EQ(devargs_iface("net_af_packet1,qpairs=2,iface=zt-veth,blocksz=4096"), "zt-veth");
    EXPECT_EQ(devargs_iface("net_tap0,iface=pods0.twin,mac=02:00:00:00:01:03"), "pods0.twin");
}

TEST(Devargs, NoIface) {
    EXPECT_EQ(devargs_iface("net_null0"), std::nullopt);
    EXPECT_EQ(devargs_iface("net_null0,size=64"), std::nullopt);
    // A key that merely ends in "iface" is another key.
    EXPECT_EQ(devargs_iface("net_x0,myiface=a"), std::nullopt);
}
