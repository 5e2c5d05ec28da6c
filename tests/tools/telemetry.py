"""Minimal client for DPDK's telemetry socket (v2) and ztgeneve's own commands.

    from telemetry import query
    counters("ztg-node")                     -> {"ports": {device: {counter: n}}}
    query("ztg-node", "/ztgeneve/devices")   -> ["productpage", "productpage.twin", ...]
    query("ztg-node", "/ztgeneve/counters,productpage") -> {"rx": ..., "redirect": ...}
    query("ztg-node", "/ethdev/stats,0")     -> {"ipackets": ..., ...}

The socket (SOCK_SEQPACKET) greets every new connection with a JSON object
({"version": ..., "pid": ..., "max_output_len": N}) which must be read first; then each
command gets one reply {"<command>": <value>}.

Command line:  python3 telemetry.py [--prefix ztg-node] [--raw] CMD [CMD...]
"""
import argparse
import json
import os
import socket
import sys

RUN_DIR = os.environ.get("ZTG_DPDK_RUN_DIR", "/var/run/dpdk")
DEFAULT_PREFIX = "ztg-node"


class TelemetryError(RuntimeError):
    pass


def socket_path(prefix, run_dir=RUN_DIR):
    return os.path.join(run_dir, prefix, "dpdk_telemetry.v2")


class Client:
    def __init__(self, prefix=DEFAULT_PREFIX, timeout=3.0, run_dir=RUN_DIR):
        self.path = socket_path(prefix, run_dir)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
            self.max_len = 16384
            self.greeting = self._recv()
        except (OSError, ValueError) as e:
            self.sock.close()
            raise TelemetryError(f"telemetry {self.path}: {e}") from e
        self.max_len = int(self.greeting.get("max_output_len", 16384))

    def _recv(self):
        data = self.sock.recv(max(self.max_len, 16384) + 1024)
        if not data:
            raise TelemetryError(f"telemetry {self.path}: connection closed")
        return json.loads(data.decode())

    def raw(self, cmd):
        """Send one command, return the whole reply ({cmd: value})."""
        self.sock.send(cmd.encode())
        return self._recv()

    def query(self, cmd):
        """Send one command, return its value (the reply without the command key)."""
        reply = self.raw(cmd)
        key = cmd.split(",", 1)[0]
        if isinstance(reply, dict) and key in reply:
            value = reply[key]
            if value is None:
                raise TelemetryError(f"telemetry {cmd}: null reply (unknown command or bad parameter)")
            return value
        return reply

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def query(prefix, cmd, timeout=3.0, raw=False, run_dir=RUN_DIR):
    """One-shot query: connect, read the greeting, send cmd, return its value (dict)."""
    with Client(prefix, timeout=timeout, run_dir=run_dir) as c:
        return c.raw(cmd) if raw else c.query(cmd)


def counters(prefix, timeout=3.0, run_dir=RUN_DIR):
    """All devices' counters in the shape of the exit line: {"ports": {name: {...}}}.
    (DPDK 22.11 telemetry keys cannot hold '-' or '.', so one query per device.)"""
    with Client(prefix, timeout=timeout, run_dir=run_dir) as c:
        return {"ports": {name: c.query(f"/ztgeneve/counters,{name}") for name in c.query("/ztgeneve/devices")}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", default=DEFAULT_PREFIX, help="DPDK file prefix (default %(default)s)")
    ap.add_argument("--raw", action="store_true", help="print the whole reply")
    ap.add_argument("cmd", nargs="+")
    a = ap.parse_args(argv)
    try:
        with Client(a.prefix) as c:
            for cmd in a.cmd:
                print(json.dumps(c.raw(cmd) if a.raw else c.query(cmd), indent=2, sort_keys=True))
    except TelemetryError as e:
        print(f"telemetry: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
