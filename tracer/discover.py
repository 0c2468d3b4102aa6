"""Read what runs here for ``tracer topology discover``: named network namespaces and their IKE daemons.

For each namespace whose name matches a pattern: its live state (``tracer.evidence.netstate``:
``ip -j`` links with veth peers, addresses, routes of every table, rules), ``ip_forward``
(``tracer.evidence.sysctl``), and the SAs of a strongSwan charon living in it. charon is found
among the namespace's processes; its vici socket among the unix sockets bound in that
namespace (``/proc/PID/net/unix``), reached through the process's own root
(``/proc/PID/root/...``, right even when charon runs in a mount namespace of its own, as the
lab's do) and written into the topology at the path it has here when there is one (found
through the two mount tables and checked by inode). A namespace without charon simply has
no IKE view; Libreswan and kernel XFRM are not read yet. The inference itself is pure:
:mod:`tracer.analysis.infer_topology`.

SSH hosts (``--ssh NODE=TARGET``) are read the same way over one SSH session per query
(``ip -batch``, ``/proc/sys``, and a short script that finds charon in the session's network
namespace and asks it over vici); their veth peers cannot be seen from here, so their links
come from shared subnets.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from tracer import netns
from tracer.analysis.infer_topology import Seen, infer, node_name
from tracer.errors import BadInput, EnvironmentProblem
from tracer.evidence import netstate, nodecmd, strongswan, sysctl
from tracer.model.checkstate import IkeState, Unavailable
from tracer.model.topology import NAME_RE, Node, Topology

DAEMONS = ("charon", "charon-systemd")  # strongSwan's IKE daemon, as /proc/PID/comm names it


def namespaces(patterns: list[str]) -> list[str]:
    """The named namespaces matching any of ``patterns`` (shell-style), sorted."""
    names = netns.list_with_prefix("")
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def literal_prefix(patterns: list[str]) -> str:
    """What every pattern starts with before its first wildcard (``trc-lab-*`` → ``trc-lab-``)."""
    heads = [re.split(r"[*?\[]", p, maxsplit=1)[0] for p in patterns]
    out = heads[0] if heads else ""
    for h in heads[1:]:  # character by character: namespace names are not paths
        out = out[:next((k for k, (a, b) in enumerate(zip(out, h, strict=False)) if a != b), min(len(out), len(h)))]
    return out


# Run on an SSH host: charon in this session's network namespace, its vici socket, its SAs.
_REMOTE_IKE = r"""me=$(readlink /proc/self/ns/net)
for p in $(pidof charon charon-systemd); do
  [ "$(readlink /proc/$p/ns/net)" = "$me" ] || continue
  s=$(awk '$8 ~ /[.]vici$/ {print $8; exit}' /proc/$p/net/unix)
  [ -n "$s" ] || continue
  [ -S "$s" ] && echo "vici $s"
  exec swanctl --list-sas --raw --noblock --uri "unix:///proc/$p/root$s"
done
echo "no charon"
"""


def discover(patterns: list[str], name: str, ssh_hosts: list[Node] | None = None) -> tuple[Topology, list[str]]:
    """``ssh_hosts``: nodes to read over SSH (name, ``ssh`` and the ``ssh_*`` fields set)."""
    netns.ensure_root()
    if not NAME_RE.fullmatch(name):
        raise BadInput(f"--name '{name}': use 1-63 letters, digits, '_', '.', '-'")
    found = namespaces(patterns)
    if patterns and not found:
        raise BadInput(f"no network namespace matches {' or '.join(patterns)} (ip netns list)")
    prefix = literal_prefix(patterns)
    seen, notes = [], []
    for ns in found:
        node = Node(node_name(ns, prefix), "host", {}, netns=ns)
        try:
            state = netstate.snapshot(node)
        except EnvironmentProblem as e:
            notes.append(f"{ns}: not read ({e})")
            continue
        values = sysctl.read(node)
        forwarding = None if isinstance(values, Unavailable) else values.get("net.ipv4.ip_forward") == 1
        ike, uri = _ike(ns, node, notes)
        seen.append(Seen(node.name, state, forwarding, ike, uri, ns))
    for host in ssh_hosts or []:
        try:
            state = netstate.snapshot_ssh(host, "")
        except EnvironmentProblem as e:
            notes.append(f"{host.name}: not read ({e})")
            continue
        values = sysctl.read(host)
        forwarding = None if isinstance(values, Unavailable) else values.get("net.ipv4.ip_forward") == 1
        ike, uri = _ike_ssh(host, notes)
        seen.append(Seen(host.name, state, forwarding, ike, uri, node=host))
    topo, more = infer(name, seen)
    return topo, notes + more


def _ike(ns: str, node: Node, notes: list[str]) -> tuple[IkeState | None, str | None]:
    """charon's SAs in ``ns`` and the vici URI to write (None: no charon, or no path valid here)."""
    for pid in netns.pids(ns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm not in DAEMONS:
            continue
        sock = _vici_socket(pid)
        if sock is None:
            notes.append(f"{ns}: {comm} (pid {pid}) has no vici socket: its tunnels are not read")
            return None, None
        here = _path_here(pid, sock)
        reach = here or f"/proc/{pid}/root{sock}"
        state = strongswan.state(Node(node.name, "host", {}), f"unix://{reach}")
        if isinstance(state, Unavailable):
            notes.append(f"{ns}: {comm}'s SAs could not be read ({state.why})")
            return None, None
        return state, f"unix://{here}" if here else None
    return None, None


def _ike_ssh(host: Node, notes: list[str]) -> tuple[IkeState | None, str | None]:
    try:
        out = nodecmd.output(host, ["sh", "-c", _REMOTE_IKE], ok=None)
    except nodecmd.Unavailable as e:
        notes.append(f"{host.name}: its IKE daemon could not be asked ({e})")
        return None, None
    if "no charon" in out.stdout.splitlines():
        return None, None
    vici = next((ln.split(" ", 1)[1] for ln in out.stdout.splitlines() if ln.startswith("vici ")), None)
    return IkeState(strongswan.ike_sas(out.stdout), f"ssh {host.ssh}"), f"unix://{vici}" if vici else None


def _vici_socket(pid: int) -> str | None:
    """The path of a listening unix socket named like strongSwan's vici socket, bound in the process's namespace."""
    try:
        lines = Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]
    except OSError:
        return None
    paths = [ln.split()[7] for ln in lines if len(ln.split()) >= 8 and ln.split()[7].startswith("/")]
    return next((p for p in paths if p.endswith(".vici")), None)


def _mounts(pid: str) -> list[tuple[str, str, str]]:
    """(device, root within the device, mount point) of a process's mount table."""
    out = []
    try:
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            f = line.split()
            out.append((f[2], _unescape(f[3]), _unescape(f[4])))
    except (OSError, IndexError):
        return []
    return out


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _path_here(pid: int, path: str) -> str | None:
    """``path`` as the process sees it, as a path in this mount namespace (same inode), if there is one."""
    try:
        want = os.stat(f"/proc/{pid}/root{path}").st_ino
    except OSError:
        return None

    def same(p: str) -> bool:
        try:
            return os.stat(p).st_ino == want
        except OSError:
            return False

    if same(path):
        return path
    theirs = [m for m in _mounts(str(pid)) if path == m[2] or path.startswith(m[2].rstrip("/") + "/")]
    if not theirs:
        return None
    dev, root, point = max(theirs, key=lambda m: len(m[2]))
    rest = path[len(point):].lstrip("/")
    for odev, oroot, opoint in _mounts("self"):
        if odev == dev and (root == oroot or root.startswith(oroot.rstrip("/") + "/")):
            candidate = os.path.join(opoint, root[len(oroot):].lstrip("/"), rest)
            if same(candidate):
                return candidate
    return None
