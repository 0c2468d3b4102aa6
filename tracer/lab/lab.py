"""The built-in lab: five network namespaces, two real strongSwan gateways.

``Lab.up()`` builds it, ``Lab.down()`` removes it; both work from different
processes because everything needed to tear down (namespaces, charon PIDs and
their start times) is recorded in ``state.json`` as soon as it exists.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

from tracer import netns
from tracer.errors import EnvironmentProblem, LabError
from tracer.lab import faults, layout, process, strongswan, toml_writer
from tracer.lab import ssh as lab_ssh

DEFAULT_STATE_DIR = Path("/run/tracer")
STATE_FILE = "state.json"
TOPOLOGY_FILE = "topology.toml"

# Sysctls for every lab namespace: IPv4 only (the lab uses IPv4 ranges and
# IPv6 link-local chatter would only add capture noise), and no reverse-path
# filter so a fault is never masked by an rp_filter drop we did not ask for.
_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}

# ssh mode: east-gw must never route between its management link and the lab's data
# path (the management namespace is the engineer's laptop, not part of the network
# under test). Its own table, so clearing a fault never touches it.
_MGMT_ISOLATION = f"""table inet tracer_mgmt {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{layout.MGMT.gw_iface}" counter drop comment "management link: not routed"
    oifname "{layout.MGMT.gw_iface}" counter drop comment "management link: not routed"
  }}
}}
"""


class Lab:
    """One named instance of the lab; several can coexist (``trc-<name>-*``)."""

    def __init__(self, name: str = "lab", state_dir: Path | None = None) -> None:
        self.name = layout.check_lab_name(name)
        self.dir = Path(state_dir or DEFAULT_STATE_DIR) / f"lab-{name}"
        self.topology_path = self.dir / TOPOLOGY_FILE
        self._state_path = self.dir / STATE_FILE
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # for reaping our own charons

    # -- names ---------------------------------------------------------------

    def namespace(self, node: str) -> str:
        """Namespace of a lab node, e.g. ``namespace("west-gw") == "trc-lab-westgw"``."""
        layout.node(node)  # KeyError for unknown nodes
        return layout.netns_name(self.name, node)

    @property
    def namespaces(self) -> dict[str, str]:
        return {n.name: self.namespace(n.name) for n in layout.NODES}

    def gateway_dir(self, gw: str) -> Path:
        """charon's directory: config, charon.log, keys.log (0600), vici socket."""
        return self.dir / gw

    # -- lifecycle -------------------------------------------------------------

    def up(self, fault: str | None = None, wait: float = 10.0, ssh: bool = False) -> Path:
        """Build the lab (or keep it if already up), apply ``fault``, return topology.toml.

        Waits until the CHILD_SA is installed on both gateways, unless the
        fault keeps IKE from completing. A failed build is torn down again.
        ``ssh``: also run sshd in east-gw, reachable from a management
        namespace, and mark east-gw in the topology to be captured over SSH
        (added to a running lab if missing; never removed by a plain ``up``).
        """
        _ensure_root()
        wanted = faults.get(fault) if fault else None
        state = self._load_state()
        if state is not None and self._healthy(state):
            if ssh and not state.get("ssh"):
                try:
                    self._add_ssh(state)
                except BaseException:
                    self._remove_ssh(state)  # leave the running lab as it was
                    raise
                self._write_topology(state)
            self._set_fault(state, wanted, wait)
            return self.topology_path
        self.down()  # stale or partial leftovers of an earlier run
        try:
            self._build(wanted, wait, ssh)
        except BaseException as err:
            try:
                self.down()
            except Exception:
                pass  # the original error is the one worth reporting
            if isinstance(err, EnvironmentProblem) and not isinstance(err, LabError):
                raise LabError(str(err)) from err  # e.g. a failed ip command
            raise
        return self.topology_path

    def down(self) -> None:
        """Remove every namespace and charon this lab made; fine when nothing is up."""
        _ensure_root()
        state = self._load_state() or {}
        procs = [(p["pid"], p["start"]) for p in state.get("charon", {}).values()]
        sshd = (state.get("ssh") or {}).get("sshd")
        if sshd and process.alive(sshd["pid"], sshd["start"]):
            # sshd -D leaves open sessions running when it exits: stop them too, by PID.
            procs += [(pid, process.start_time(pid)) for pid in process.descendants(sshd["pid"])]
            procs.append((sshd["pid"], sshd["start"]))
        self._stop_processes(procs)
        # Our namespaces are recorded, and the name prefix is ours alone (lab
        # names contain no '-'), which also catches a run that died before
        # recording anything.
        names = set(state.get("namespaces", {}).values()) | set(
            netns.list_with_prefix(layout.ns_prefix(self.name))
        )
        if state.get("ssh"):
            names.add(state["ssh"]["netns"])
        if names:
            netns.ip_batch([f"netns delete {ns}" for ns in sorted(names)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def set_fault(self, name: str, wait: float = 10.0) -> None:
        """Inject fault ``name`` into the running lab (replacing any other)."""
        _ensure_root()
        self._set_fault(self._require_up(), faults.get(name), wait)

    def clear_fault(self, wait: float = 10.0) -> None:
        """Remove the active fault; re-establish the tunnel if the fault had broken it."""
        _ensure_root()
        self._set_fault(self._require_up(), None, wait)

    def status(self) -> dict[str, Any]:
        """What is there right now: namespaces, charons, SAs, routes, fault counters."""
        _ensure_root()
        state = self._load_state()
        result: dict[str, Any] = {
            "name": self.name,
            "dir": str(self.dir),
            "up": False,
            "topology": str(self.topology_path) if self.topology_path.exists() else None,
            "fault": state.get("fault") if state else None,
            "namespaces": {
                node: {"netns": ns, "present": netns.exists(ns)} for node, ns in self.namespaces.items()
            },
        }
        if state is None:
            return result
        result["charon"] = {
            gw: {"pid": p["pid"], "alive": process.alive(p["pid"], p["start"])} for gw, p in state["charon"].items()
        }
        gateways: dict[str, Any] = {}
        for gw in layout.GATEWAYS:
            entry: dict[str, Any] = {"ike_sas": []}
            if result["charon"].get(gw, {}).get("alive"):
                try:
                    entry["ike_sas"] = strongswan.summarize(strongswan.list_sas(self.gateway_dir(gw)))
                except LabError as err:
                    entry["error"] = str(err)
            gateways[gw] = entry
        result["gateways"] = gateways
        result["tunnel_up"] = all(
            any(c["state"] == "INSTALLED" for sa in g["ike_sas"] for c in sa["child_sas"]) for g in gateways.values()
        )
        result["routes"] = {node: _routes(ns) for node, ns in self.namespaces.items() if netns.exists(ns)}
        if state.get("fault"):
            result["fault_drops"] = faults.counters(faults.get(state["fault"]), self.namespace)
        if state.get("ssh"):
            sshd = state["ssh"]["sshd"] or {}
            result["ssh"] = {
                "netns": state["ssh"]["netns"],
                "node": layout.MGMT.gw,
                "target": f"{lab_ssh.USER}@{layout.MGMT.gw_address.split('/')[0]}",
                "sshd_pid": sshd.get("pid"),
                "sshd_alive": bool(sshd) and process.alive(sshd["pid"], sshd["start"]),
            }
        result["up"] = self._healthy(state)
        return result

    def child_sa_keys(self, gw: str) -> list[strongswan.ChildSaKeys]:
        """CHILD_SA keys as logged by ``gw``'s charon (secret: do not print)."""
        path = self.gateway_dir(gw) / strongswan.KEYS_LOG
        try:
            return strongswan.child_sa_keys(path.read_text(errors="replace"))
        except FileNotFoundError:
            raise LabError(f"no key log for {gw}: is lab '{self.name}' up?") from None

    # -- building ----------------------------------------------------------------

    def _build(self, fault: faults.Fault | None, wait: float, ssh: bool = False) -> None:
        _check_tools()
        if ssh:
            lab_ssh.check_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        state: dict[str, Any] = {"name": self.name, "namespaces": {}, "charon": {}, "fault": None}
        ns = self.namespaces

        # Record first, create second: a crash in between leaves nothing unrecorded.
        state["namespaces"] = ns
        self._save_state(state)
        netns.ip_batch([f"netns add {n}" for n in ns.values()])
        for name in ns.values():
            netns.write_sysctls(name, _SYSCTLS)
        for n in layout.NODES:
            if n.forwards:
                netns.write_sysctls(ns[n.name], {"net.ipv4.ip_forward": "1"})

        # veth ends are created directly inside their namespaces, under their
        # final names: nothing ever appears in the root namespace.
        netns.ip_batch(
            [
                f"link add {ai} netns {ns[a]} type veth peer name {bi} netns {ns[b]}"
                for (a, ai), (b, bi) in layout.LINKS
            ]
        )
        for n in layout.NODES:
            lines = ["link set lo up"]
            for i in n.interfaces:
                if i.name == layout.TUNNEL_IFACE:
                    continue  # charon creates it
                lines += [f"addr add {a} dev {i.name}" for a in i.addresses]
                lines.append(f"link set {i.name} up")
            for r in n.routes:
                if not r.by_charon:
                    lines.append(f"route add {r.dst} via {r.via} dev {r.dev}" if r.via else f"route add {r.dst} dev {r.dev}")
            netns.ip_batch(lines, ns=ns[n.name])

        psk = secrets.token_hex(32)
        for gw, cfg in _gateway_configs(psk).items():
            gw_dir = self.gateway_dir(gw)
            strongswan.write_config(gw_dir, cfg)
            proc = strongswan.start_charon(ns[gw], gw_dir)
            self._children[proc.pid] = proc
            state["charon"][gw] = {"pid": proc.pid, "start": process.start_time(proc.pid)}
            self._save_state(state)
        for gw in layout.GATEWAYS:
            gw_dir = self.gateway_dir(gw)
            pid = state["charon"][gw]["pid"]
            strongswan.wait_vici(gw_dir, lambda pid=pid: self._child_alive(pid))
            strongswan.load(gw_dir)

        if ssh:
            self._add_ssh(state)
        self._write_topology(state)
        self._set_fault(state, fault, wait)

    def _add_ssh(self, state: dict[str, Any]) -> None:
        """Management namespace ↔ east-gw:mgmt0, and a real sshd in east-gw listening there."""
        lab_ssh.check_tools()
        m = layout.MGMT
        mgmt_ns, gw_ns = layout.netns_name(self.name, m.node), self.namespace(m.gw)
        address = m.gw_address.split("/")[0]
        state["ssh"] = {"netns": mgmt_ns, "sshd": None}
        self._save_state(state)  # record first, create second
        netns.ip_batch([f"netns add {mgmt_ns}"])
        netns.write_sysctls(mgmt_ns, _SYSCTLS)
        netns.ip_batch([f"link add {m.gw_iface} netns {gw_ns} type veth peer name {m.iface} netns {mgmt_ns}"])
        # Connected routes only: the management namespace reaches 203.0.113.0/24 and nothing else.
        netns.ip_batch(["link set lo up", f"addr add {m.address} dev {m.iface}", f"link set {m.iface} up"], ns=mgmt_ns)
        netns.ip_batch([f"addr add {m.gw_address} dev {m.gw_iface}", f"link set {m.gw_iface} up"], ns=gw_ns)
        netns.write_sysctls(gw_ns, {f"net.ipv4.conf.{m.gw_iface}.forwarding": "0"})
        netns.ns_run(gw_ns, ["nft", "-f", "-"], input=_MGMT_ISOLATION)
        lab_ssh.write_files(self.dir, self.name, address)
        proc = lab_ssh.start_sshd(gw_ns, self.dir)
        self._children[proc.pid] = proc
        state["ssh"]["sshd"] = {"pid": proc.pid, "start": process.start_time(proc.pid)}
        self._save_state(state)
        lab_ssh.wait_listening(self.dir, proc.pid, lambda: self._child_alive(proc.pid))
        lab_ssh.check_login(mgmt_ns, self.dir, address)

    def _remove_ssh(self, state: dict[str, Any]) -> None:
        """Undo :meth:`_add_ssh` on a lab that stays up (deleting the namespace removes the veth)."""
        ssh = state.get("ssh") or {}
        sshd = ssh.get("sshd")
        if sshd and process.alive(sshd["pid"], sshd["start"]):
            self._stop_processes([*((pid, process.start_time(pid)) for pid in process.descendants(sshd["pid"])),
                                  (sshd["pid"], sshd["start"])])
        if ssh.get("netns"):
            netns.delete(ssh["netns"])
        gw_ns = self.namespace(layout.MGMT.gw)
        netns.ns_run(gw_ns, ["nft", "-f", "-"], input="add table inet tracer_mgmt\ndelete table inet tracer_mgmt\n",
                     check=False)
        state.pop("ssh", None)
        self._save_state(state)

    def _set_fault(self, state: dict[str, Any], fault: faults.Fault | None, wait: float) -> None:
        """Make ``fault`` the active one (None: no fault) and the tunnel state match it."""
        changed = state.get("fault") != (fault.name if fault else None)
        if changed:
            self._clear(state)
            if fault is not None:
                # Record first, apply second: a half-applied fault is still known and cleared.
                state["fault"] = fault.name
                self._save_state(state)
                faults.apply(fault, self.namespace)
        if fault is not None and fault.stops_ike:
            if changed:
                # A blocked path does not tear down existing SAs (no DPD here),
                # so drop them and start a fresh attempt that cannot complete;
                # charon keeps retransmitting it in the background.
                self._terminate_all()
                strongswan.initiate(self.gateway_dir(layout.TUNNEL.left.node), layout.TUNNEL.name, timeout=1)
            self._export_esp_keys()
            return
        if not all(
            strongswan.child_installed(strongswan.list_sas(self.gateway_dir(gw)), layout.TUNNEL.name)
            for gw in layout.GATEWAYS
        ):
            self._establish(wait)
        if not self.topology_path.exists():
            self._write_topology(state)
        self._export_esp_keys()

    def _export_esp_keys(self) -> None:
        """Keep ``esp_sa`` (mode 0600, named by the topology) in step with the CHILD_SAs charon
        logged, so tracer decrypts the lab's ESP by default. Only tracer's analysis reads it."""
        from tracer.esp.keys import write_esp_sa_file
        from tracer.lab.keys import sas_from_lab

        path = self.dir / layout.ESP_SA_FILE
        try:
            sas = sas_from_lab(self)
        except LabError:
            sas = []  # no CHILD_SA yet (e.g. IKE blocked): better no file than a wrong one
        if sas:
            write_esp_sa_file(path, sas)
        else:
            path.unlink(missing_ok=True)

    def _terminate_all(self) -> None:
        for gw in layout.GATEWAYS:
            strongswan.terminate(self.gateway_dir(gw), layout.TUNNEL.name)

    def _establish(self, wait: float) -> None:
        """(Re)initiate the tunnel from the left gateway and wait for both CHILD_SAs."""
        left = self.gateway_dir(layout.TUNNEL.left.node)
        right = self.gateway_dir(layout.TUNNEL.right.node)
        deadline = time.monotonic() + wait
        # Drop half-open or stale SAs first so nothing waits for a retransmit timer.
        self._terminate_all()
        ok = strongswan.initiate(left, layout.TUNNEL.name, wait)
        while ok and time.monotonic() < deadline + 1.0:
            if strongswan.child_installed(strongswan.list_sas(right), layout.TUNNEL.name):
                return
            time.sleep(0.01)
        raise LabError(
            f"tunnel {layout.TUNNEL.name} did not come up within {wait:.0f} s; "
            f"west-gw charon says: {strongswan.last_log_line(left)}"
        )

    def _clear(self, state: dict[str, Any]) -> faults.Fault | None:
        name = state.get("fault")
        if not name:
            return None
        fault = faults.get(name)
        faults.clear(fault, self.namespace)
        state["fault"] = None
        self._save_state(state)
        return fault

    def _write_topology(self, state: dict[str, Any] | None = None) -> None:
        ssh_keys = None
        if state and state.get("ssh"):
            m = layout.MGMT
            ssh_keys = {m.gw: lab_ssh.topology_keys(self.dir, m.gw_address.split("/")[0], state["ssh"]["netns"])}
        doc = layout.topology_document(self.name, ssh_keys)
        text = (
            f"# Topology of tracer lab '{self.name}', written by 'tracer lab up'.\n"
            "# Describes the intended network; an injected fault is deliberately not in it.\n\n"
            + toml_writer.dumps(doc)
        )
        if tomllib.loads(text) != doc:  # the emitter is ours: prove it round-trips
            raise LabError("internal error: topology.toml does not round-trip through tomllib")
        tmp = self.topology_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.topology_path)

    # -- state and processes -------------------------------------------------------

    def _load_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self._state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self._state_path)

    def _require_up(self) -> dict[str, Any]:
        state = self._load_state()
        if state is None or not self._healthy(state):
            raise LabError(f"lab '{self.name}' is not up: run 'tracer lab up --name {self.name}' first")
        return state

    def _healthy(self, state: dict[str, Any]) -> bool:
        ssh = state.get("ssh")
        return (
            all(netns.exists(ns) for ns in state.get("namespaces", {}).values())
            and set(state.get("charon", {})) == set(layout.GATEWAYS)
            and all(process.alive(p["pid"], p["start"]) for p in state["charon"].values())
            and (not ssh or (netns.exists(ssh["netns"]) and bool(ssh["sshd"])
                             and process.alive(ssh["sshd"]["pid"], ssh["sshd"]["start"])))
        )

    def _child_alive(self, pid: int) -> bool:
        proc = self._children.get(pid)
        return proc.poll() is None if proc else process.alive(pid, None)

    def _stop_processes(self, procs: list[tuple[int, int | None]]) -> None:
        """SIGTERM our recorded PIDs (only if still the same process), SIGKILL after 3 s."""
        live = [(pid, start) for pid, start in procs if process.alive(pid, start)]
        for pid, _ in live:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while live and time.monotonic() < deadline:
            time.sleep(0.01)
            live = [(pid, start) for pid, start in live if self._reap(pid) and process.alive(pid, start)]
        for pid, _ in live:
            _signal(pid, signal.SIGKILL)
            self._reap(pid, block=True)

    def _reap(self, pid: int, block: bool = False) -> bool:
        """Collect our own child's exit status; returns True while it may still run."""
        proc = self._children.get(pid)
        if proc is None:
            return True
        try:
            if block:
                proc.wait(timeout=2.0)
            elif proc.poll() is None:
                return True
        except subprocess.TimeoutExpired:
            return True
        self._children.pop(pid, None)
        return False


def _gateway_configs(psk: str) -> dict[str, strongswan.GatewayConfig]:
    t = layout.TUNNEL
    return {
        t.left.node: strongswan.GatewayConfig(t.name, t.left.address, t.right.address, t.left.subnets, t.right.subnets, psk),
        t.right.node: strongswan.GatewayConfig(t.name, t.right.address, t.left.address, t.right.subnets, t.left.subnets, psk),
    }


def _ensure_root() -> None:
    try:
        netns.ensure_root()
    except EnvironmentProblem as err:
        raise LabError(f"the lab {err}") from None


def _check_tools() -> None:
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("swanctl", "strongswan-swanctl"), ("unshare", "util-linux")):
        try:
            netns.ensure_tool(tool, package=package)
        except EnvironmentProblem as err:
            raise LabError(str(err)) from None
    if not os.access(strongswan.CHARON, os.X_OK):
        raise LabError(f"{strongswan.CHARON} not found: apt-get install strongswan-charon libcharon-extra-plugins")
    # Each plugin charon is told to load must be there, or IKE fails later with an obscure
    # "no ... proposal" (openssl, for instance, is only a Recommends of Debian's libstrongswan).
    for plugin in strongswan.CHARON_PLUGINS.split():
        if not Path(f"/usr/lib/ipsec/plugins/libstrongswan-{plugin}.so").exists():
            package = _PLUGIN_PACKAGES.get(plugin, "libstrongswan")
            raise LabError(f"strongSwan plugin '{plugin}' missing: apt-get install {package}")
    if not Path("/dev/net/tun").exists():
        raise LabError("/dev/net/tun missing: kernel-libipsec needs TUN devices (modprobe tun)")


_PLUGIN_PACKAGES = {
    "openssl": "libstrongswan-standard-plugins",
    "kernel-libipsec": "libcharon-extra-plugins",
    "socket-default": "strongswan-libcharon",
    "vici": "strongswan-swanctl",
}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _routes(ns: str) -> list[str]:
    """IPv4 routes of all tables except local, one ``ip route`` line each."""
    proc = netns.ip(["-4", "-j", "route", "show", "table", "all"], ns=ns, check=False)
    if proc.returncode != 0:
        return []
    out = []
    for r in json.loads(proc.stdout or "[]"):
        if r.get("table") == "local" or r.get("type") in ("local", "broadcast"):
            continue
        parts = [r["dst"]]
        if "gateway" in r:
            parts.append(f"via {r['gateway']}")
        if "dev" in r:
            parts.append(f"dev {r['dev']}")
        if r.get("table") not in (None, "main"):
            parts.append(f"table {r['table']}")
        out.append(" ".join(parts))
    return out

