"""``net.ipv4`` sysctls of a node that ``tracer check`` judges: ``ip_forward``, and per
interface ``forwarding`` and ``rp_filter`` (``conf.all`` included, which the kernel combines
with each interface's). Read as ``path:value`` lines from /proc/sys inside the node's
namespace or on its SSH host; the parsing (:func:`parse`) is pure."""

from __future__ import annotations

from tracer.evidence import nodecmd
from tracer.model.checkstate import Sysctls, Unavailable
from tracer.model.topology import Node

PATHS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/*/forwarding",
         "/proc/sys/net/ipv4/conf/*/rp_filter")


def read(node: Node, topo_source: str = "") -> Sysctls | Unavailable:
    # grep -r . prints "path:value" for every file; the shell expands the globs where it runs.
    argv = ["sh", "-c", "exec grep -r . " + " ".join(PATHS)]
    try:
        out = nodecmd.output(node, argv, topo_source, ok=None)
    except nodecmd.Unavailable as e:
        return Unavailable(str(e))
    values = parse(out.stdout)
    if not values:
        err = (out.stderr.strip() or "no output").splitlines()[-1]
        return Unavailable(f"/proc/sys/net/ipv4 could not be read: {err[:200]}")
    return values


def parse(text: str) -> Sysctls:
    """``/proc/sys/net/ipv4/conf/wan0/rp_filter:1`` lines → {"net.ipv4.conf.wan0.rp_filter": 1}."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        path, sep, value = line.rpartition(":")
        if not sep or not path.startswith("/proc/sys/"):
            continue
        try:
            values[path.removeprefix("/proc/sys/").replace("/", ".")] = int(value.strip())
        except ValueError:
            continue
    return Sysctls(values)
