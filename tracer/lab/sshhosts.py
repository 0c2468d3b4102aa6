"""A lab of many SSH hosts: a chain of routers, each its own network namespace running a real
OpenSSH sshd, captured over SSH from a management namespace (issue 14: traces beyond one machine).

::

    a ── r01 ── r02 ── … ── rNN ── b          data path: 198.18.<k>.0/24 between hop k and k+1
          │      │           │
          └──────┴── br0 ────┴── mgmt          management: 198.19.0.0/24 on a bridge namespace

``a`` and ``b`` are captured locally (tcpdump in their namespaces); every router is captured
over SSH (``capture = "ssh"``), the ssh client running in ``trc-<lab>-mgmt`` with the lab's
key and pinned host key, like the built-in lab's SSH mode (:mod:`tracer.lab.sshmode`, whose
key and config writers this reuses). The management interfaces are in the topology (no link):
they are the hosts' real interfaces, captured as witnesses. Nothing is connected to the root
namespace; every address is in 198.18.0.0/15.

``remote_tracer``: sessions get ``PYTHONPATH`` pointing at this tracer and this interpreter
first on ``PATH`` (authorized_keys ``environment=``), i.e. tracer is installed on the hosts and they extract observation columns
there (tracer.sniff.ssh); without it they stream whole captures. :func:`set_remote_tracer`
switches between the two for the next sessions.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tracer import netns
from tracer.errors import LabError
from tracer.lab import build, layout, sshmode
from tracer.lab.process import Children, Proc
from tracer.model.topology import Topology
from tracer.topofile import dump_topology

BRIDGE_NODE = "br"
MGMT_NODE = "mgmt"
MGMT_NET = "198.19.0"  # /24: the client .1, router k .(10 + k)
MAX_HOSTS = 240
STATE = "hosts.json"
TRACER_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the tracer package


def router(k: int) -> str:
    return f"r{k:02d}"


def mgmt_address(k: int) -> str:
    return f"{MGMT_NET}.{10 + k}"


KEPT_CACHE = "cache"  # the hosts' XDG_CACHE_HOME: their kept captures, under tracer/run.*/


def topology_dict(lab: str, n: int, lab_dir: Path) -> dict:
    """The chain's topology file contents (docs/topology.md)."""
    def ns(node: str) -> str:
        return layout.netns_name(lab, node)

    def iface(addr: str) -> dict:
        return {"addresses": [addr]}

    nodes: dict[str, dict] = {
        "a": {"role": "host", "netns": ns("a"), "interfaces": {"eth0": iface("198.18.0.1/24")},
              "routes": [{"dst": "0.0.0.0/0", "via": "198.18.0.2", "dev": "eth0"}]},
        "b": {"role": "host", "netns": ns("b"), "interfaces": {"eth0": iface(f"198.18.{n}.2/24")},
              "routes": [{"dst": "0.0.0.0/0", "via": f"198.18.{n}.1", "dev": "eth0"}]},
    }
    links = [{"ends": ["a:eth0", f"{router(1)}:eth0"]}]
    for k in range(1, n + 1):
        routes = []
        if k > 1:
            routes.append({"dst": "198.18.0.0/24", "via": f"198.18.{k - 1}.1", "dev": "eth0"})
        if k < n:
            routes.append({"dst": f"198.18.{n}.0/24", "via": f"198.18.{k}.2", "dev": "eth1"})
        nodes[router(k)] = {
            "role": "router", "netns": ns(router(k)), "capture": "ssh", "ssh": f"{sshmode.USER}@{mgmt_address(k)}",
            "ssh_netns": ns(MGMT_NODE), "ssh_key": str(lab_dir / sshmode.CLIENT_KEY),
            "ssh_known_hosts": str(lab_dir / sshmode.KNOWN_HOSTS),
            "interfaces": {"eth0": iface(f"198.18.{k - 1}.2/24"), "eth1": iface(f"198.18.{k}.1/24"),
                           "mgmt0": iface(f"{mgmt_address(k)}/24")},
            "routes": routes,
        }
        links.append({"ends": [f"{router(k)}:eth1", f"{router(k + 1)}:eth0" if k < n else "b:eth0"]})
    return {"name": lab, "nodes": nodes, "links": links}


@dataclass
class HostsLab:
    name: str
    n: int
    dir: Path
    sshd: list[Proc] = field(default_factory=list)
    _children: Children = field(default_factory=Children)

    @property
    def topology_path(self) -> Path:
        return self.dir / "topology.toml"

    @property
    def mgmt_netns(self) -> str:
        return layout.netns_name(self.name, MGMT_NODE)

    def up(self, remote_tracer: bool = True) -> HostsLab:
        """Build it (removing a leftover of the same name first); on any failure, tear it down."""
        if not 1 <= self.n <= MAX_HOSTS:
            raise LabError(f"{self.n} hosts: between 1 and {MAX_HOSTS}")
        layout.check_lab_name(self.name)
        build.check_tools()
        sshmode.check_tools()
        self.down()
        try:
            self._build(remote_tracer)
        except BaseException:
            self.down()
            raise
        return self

    def _build(self, remote_tracer: bool) -> None:
        self.dir.mkdir(mode=0o700, parents=True)
        topo = Topology.from_dict(topology_dict(self.name, self.n, self.dir), source=str(self.topology_path))
        self.topology_path.write_text(dump_topology(topo))
        br, mgmt = layout.netns_name(self.name, BRIDGE_NODE), self.mgmt_netns
        build.add_namespaces([*(n.netns for n in topo.nodes.values() if n.netns), br, mgmt])
        hosts = [router(k) for k in range(1, self.n + 1)]
        # The management bridge first (build.wire then addresses the hosts' mgmt0 like any
        # interface): one veth per host into the bridge namespace, and the client's.
        lines = ["link add br0 netns " + br + " type bridge"]
        lines += [f"link add mgmt0 netns {layout.netns_name(self.name, h)} type veth peer name m{k} netns {br}"
                  for k, h in enumerate(hosts, 1)]
        lines.append(f"link add eth0 netns {mgmt} type veth peer name m0 netns {br}")
        netns.ip_batch(lines)
        netns.ip_batch(["link set lo up", "link set br0 up",
                        *(c for k in range(self.n + 1) for c in (f"link set m{k} master br0", f"link set m{k} up"))],
                       ns=br)
        netns.ip_batch(["link set lo up", f"addr add {MGMT_NET}.1/24 dev eth0", "link set eth0 up"], ns=mgmt)
        build.wire(topo)
        for h in hosts:  # never routed between the management link and the data path
            netns.ns_run(layout.netns_name(self.name, h), ["nft", "-f", "-"], input=sshmode.ISOLATION)
        sshmode.write_keys(self.dir, self.name, [mgmt_address(k) for k in range(1, self.n + 1)],
                           _environment(remote_tracer, self.dir))
        procs = []
        for k, h in enumerate(hosts, 1):
            hdir = self.dir / h
            hdir.mkdir(mode=0o700)
            (hdir / sshmode.CONFIG).write_text(sshmode.sshd_config(
                f"sshd of host {h} of hosts lab '{self.name}'", mgmt_address(k), self.dir, hdir,
                "PermitUserEnvironment PYTHONPATH,PATH,XDG_CACHE_HOME\n"))
            (hdir / sshmode.CONFIG).chmod(0o600)
            procs.append((hdir, sshmode.start_sshd(layout.netns_name(self.name, h), hdir)))
        for _, proc in procs:
            self.sshd.append(self._children.add(proc))
        self._save()
        for hdir, proc in procs:
            sshmode.wait_listening(hdir, proc.pid, lambda p=proc: self._children.running(p.pid))

    def set_remote_tracer(self, on: bool) -> None:
        """Whether the hosts' next SSH sessions find tracer (``python3 -m tracer``) installed."""
        sshmode.authorize(self.dir, _environment(on, self.dir))

    def _save(self) -> None:
        (self.dir / STATE).write_text(json.dumps({"n": self.n, "sshd": [[p.pid, p.start] for p in self.sshd]}))

    def down(self) -> None:
        """Stop its sshds (by PID and start time), delete its namespaces and its directory."""
        procs = list(self.sshd)
        try:
            saved = json.loads((self.dir / STATE).read_text())
            procs += [Proc(pid, start) for pid, start in saved["sshd"]]
        except (OSError, ValueError, KeyError):
            pass
        self._children.stop([t for p in procs for t in p.tree()])
        self.sshd = []
        for ns in netns.list_with_prefix(layout.ns_prefix(self.name)):
            netns.delete(ns)
        shutil.rmtree(self.dir, ignore_errors=True)


def _environment(remote_tracer: bool, lab_dir: Path) -> list[str]:
    """Tracer "installed" on the hosts: this tracer on their path, run by this interpreter; the
    captures they keep go to the lab's own folder (XDG_CACHE_HOME), removed with the lab."""
    if not remote_tracer:
        return []
    return [f"PYTHONPATH={TRACER_ROOT}", f"PATH={Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            f"XDG_CACHE_HOME={lab_dir / KEPT_CACHE}"]
