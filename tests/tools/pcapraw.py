"""Classic pcap files read and written without scapy (fast, and quick to import)."""
import struct


def raw_frames(path):
    """The frames (bytes) of a classic pcap file; tolerates a record cut short at the end
    (tcpdump still writing)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        if off + incl > len(data):
            return
        yield data[off:off + incl]
        off += incl


def write_frames(path, frames):
    """Writes frames (bytes) as a classic little-endian pcap file (Ethernet, microsecond
    timestamps 0, 1, 2 ... so that the same frames always give the same file)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)))
            f.write(fr)
