"""The built-in lab: five network namespaces, two real strongSwan gateways.

``Lab.up()`` builds it, ``Lab.down()`` removes it; both work from different
processes because everything needed to tear down (namespaces, charon PIDs and
their start times) is recorded in ``state.json`` as soon as it exists. This
module orders the steps; each concern has its module: :mod:`.layout` (the
Topology), :mod:`.build` (namespaces, links, routes), :mod:`.strongswan`
(charon), :mod:`.faults`, :mod:`.sshmode`, :mod:`.state`.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tracer import netns, subprocs
from tracer.errors import EnvironmentProblem, LabError
from tracer.lab import build, faults, layout, process, sshmode, strongswan
from tracer.lab.state import STATE_FILE, LabState, SshMode, read_state, write_state
from tracer.model.topology import Topology
from tracer.topofile import save_topology

DEFAULT_STATE_DIR = Path("/run/tracer")
TOPOLOGY_FILE = "topology.toml"


class Lab:
    """One named instance of the lab; several can coexist (``trc-<name>-*``)."""

    def __init__(self, name: str = "lab", state_dir: Path | None = None) -> None:
        self.name = layout.check_lab_name(name)
        self.dir = Path(state_dir or DEFAULT_STATE_DIR) / f"lab-{name}"
        self.topology_path = self.dir / TOPOLOGY_FILE
        self._state_path = self.dir / STATE_FILE
        self._children = process.Children()  # our own charons and sshd, reaped by us

    # -- names ---------------------------------------------------------------

    def namespace(self, node: str) -> str:
        """Namespace of a lab node, e.g. ``namespace("west-gw") == "trc-lab-westgw"``."""
        layout.node(node)  # KeyError for unknown nodes
        return layout.netns_name(self.name, node)

    @property
    def namespaces(self) -> dict[str, str]:
        return {name: self.namespace(name) for name in layout.NODES}

    def gateway_dir(self, gw: str) -> Path:
        """charon's directory: config, charon.log, keys.log (0600), vici socket."""
        return self.dir / gw

    def topology(self) -> Topology:
        """The lab as ``topology.toml`` describes it (east-gw captured over SSH in SSH mode)."""
        return self._topology(self._load_state())

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
            if ssh and not state.ssh:
                try:
                    state = self._add_ssh(state)
                except BaseException:
                    self._remove_ssh(self._load_state() or state)  # leave the running lab as it was
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

    def down(self) -> list[subprocs.Helper]:
        """Remove every namespace and process this lab made; fine when nothing is up. First,
        the sniffers and bpftrace of traces killed outright (recorded by PID, start time and
        command line, whatever lab they captured in): returned, to say what was stopped."""
        _ensure_root()
        orphans = subprocs.reap_orphans()
        try:
            state = self._load_state()
        except LabError:
            state = None  # unreadable: the namespace prefix below still finds the namespaces
        procs = list(state.charon.values()) if state else []
        if state and state.ssh and state.ssh.sshd:
            procs += state.ssh.sshd.tree()
        self._children.stop(procs)
        # Our namespaces are recorded, and the name prefix is ours alone (lab
        # names contain no '-'), which also catches a run that died before
        # recording anything.
        names = set(netns.list_with_prefix(layout.ns_prefix(self.name)))
        if state:
            names |= set(state.namespaces.values())
            if state.ssh:
                names.add(state.ssh.netns)
        if names:
            netns.ip_batch([f"netns delete {ns}" for ns in sorted(names)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        return orphans

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
            "fault": state.fault if state else None,
            "namespaces": {
                node: {"netns": ns, "present": netns.exists(ns)} for node, ns in self.namespaces.items()
            },
        }
        if state is None:
            return result
        result["charon"] = {gw: {"pid": p.pid, "alive": p.alive()} for gw, p in state.charon.items()}
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
        result["routes"] = {node: build.routes(ns) for node, ns in self.namespaces.items() if netns.exists(ns)}
        if state.fault:
            result["fault_drops"] = faults.counters(faults.get(state.fault), self.namespace)
        if state.ssh:
            sshd = state.ssh.sshd
            result["ssh"] = {
                "netns": state.ssh.netns,
                "node": sshmode.MGMT.gw,
                "target": sshmode.TARGET,
                "sshd_pid": sshd.pid if sshd else None,
                "sshd_alive": sshd is not None and sshd.alive(),
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
        build.check_tools()
        strongswan.check_tools()
        if ssh:
            sshmode.check_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)

        # Record first, create second: a crash in between leaves nothing unrecorded.
        state = self._save(LabState(self.name, self.namespaces))
        build.add_namespaces(state.namespaces.values())
        build.wire(layout.topology(self.name))

        psk = secrets.token_hex(32)
        for gw, cfg in strongswan.gateway_configs(layout.TUNNEL, psk).items():
            gw_dir = self.gateway_dir(gw)
            strongswan.write_config(gw_dir, cfg)
            charon = self._children.add(strongswan.start_charon(self.namespace(gw), gw_dir))
            state = self._save(replace(state, charon={**state.charon, gw: charon}))
        for gw in layout.GATEWAYS:
            gw_dir = self.gateway_dir(gw)
            pid = state.charon[gw].pid
            strongswan.wait_vici(gw_dir, lambda pid=pid: self._children.running(pid))
            strongswan.load(gw_dir)

        if ssh:
            state = self._add_ssh(state)
        self._write_topology(state)
        self._set_fault(state, fault, wait)

    def _add_ssh(self, state: LabState) -> LabState:
        """Management namespace ↔ east-gw:mgmt0, and a real sshd in east-gw listening there."""
        sshmode.check_tools()
        mgmt_ns, gw_ns = sshmode.mgmt_netns(self.name), self.namespace(sshmode.MGMT.gw)
        state = self._save(replace(state, ssh=SshMode(mgmt_ns)))  # record first, create second
        sshmode.link(mgmt_ns, gw_ns)
        sshmode.write_files(self.dir, self.name)
        proc = sshmode.start_sshd(gw_ns, self.dir)
        state = self._save(replace(state, ssh=SshMode(mgmt_ns, self._children.add(proc))))
        sshmode.wait_listening(self.dir, proc.pid, lambda: self._children.running(proc.pid))
        sshmode.check_login(mgmt_ns, self.dir)
        return state

    def _remove_ssh(self, state: LabState) -> LabState:
        """Undo :meth:`_add_ssh` on a lab that stays up (deleting the namespace removes the veth)."""
        if state.ssh:
            if state.ssh.sshd:
                self._children.stop(state.ssh.sshd.tree())
            netns.delete(state.ssh.netns)
        sshmode.unlink(self.namespace(sshmode.MGMT.gw))
        return self._save(replace(state, ssh=None))

    def _set_fault(self, state: LabState, fault: faults.Fault | None, wait: float) -> None:
        """Make ``fault`` the active one (None: no fault) and the tunnel state match it."""
        changed = state.fault != (fault.name if fault else None)
        if changed:
            state = self._clear(state)
            if fault is not None:
                # Record first, apply second: a half-applied fault is still known and cleared.
                state = self._save(replace(state, fault=fault.name))
                faults.apply(fault, self.namespace)
                if fault.stops_charon:
                    self._children.stop([state.charon[fault.stops_charon]])
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

    def _clear(self, state: LabState) -> LabState:
        if not state.fault:
            return state
        fault = faults.get(state.fault)
        faults.clear(fault, self.namespace)
        if fault.stops_charon:
            state = self._restart_charon(state, fault.stops_charon)
        return self._save(replace(state, fault=None))

    def _restart_charon(self, state: LabState, gw: str) -> LabState:
        """Start ``gw``'s charon again (a fault stopped it) with its configuration loaded."""
        if state.charon[gw].alive():
            return state
        gw_dir = self.gateway_dir(gw)
        (gw_dir / strongswan.VICI).unlink(missing_ok=True)
        charon = self._children.add(strongswan.start_charon(self.namespace(gw), gw_dir))
        state = self._save(replace(state, charon={**state.charon, gw: charon}))
        strongswan.wait_vici(gw_dir, lambda: self._children.running(charon.pid))
        strongswan.load(gw_dir)
        return state

    def _export_esp_keys(self) -> None:
        from tracer.lab import espkeys  # imported when used: it pulls in tracer.esp

        espkeys.export(self)

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

    def _topology(self, state: LabState | None) -> Topology:
        fields: dict[str, dict[str, Any]] = {gw: strongswan.evidence_fields(self.gateway_dir(gw)) for gw in layout.GATEWAYS}
        if state and state.ssh:
            fields[sshmode.MGMT.gw] |= sshmode.node_fields(self.dir, state.ssh.netns)
        return layout.topology(self.name, fields)

    def _write_topology(self, state: LabState | None = None) -> None:
        header = (
            f"Topology of tracer lab '{self.name}', written by 'tracer lab up'.\n"
            "Describes the intended network; an injected fault is deliberately not in it."
        )
        save_topology(self._topology(state), self.topology_path, header)

    # -- state -------------------------------------------------------------------

    def _load_state(self) -> LabState | None:
        return read_state(self._state_path)

    def _save(self, state: LabState) -> LabState:
        return write_state(self._state_path, state)

    def _require_up(self) -> LabState:
        state = self._load_state()
        if state is None or not self._healthy(state):
            raise LabError(f"lab '{self.name}' is not up: run 'tracer lab up --name {self.name}' first")
        return state

    def _healthy(self, state: LabState) -> bool:
        ssh = state.ssh
        return (
            all(netns.exists(ns) for ns in state.namespaces.values())
            and set(state.charon) == set(layout.GATEWAYS)
            and all(p.alive() for gw, p in state.charon.items() if gw != _stopped_charon(state))
            and (ssh is None or (netns.exists(ssh.netns) and ssh.sshd is not None and ssh.sshd.alive()))
        )


def _stopped_charon(state: LabState) -> str | None:
    """The gateway whose charon the active fault stopped on purpose, if any."""
    fault = faults.FAULTS_BY_NAME.get(state.fault) if state.fault else None
    return fault.stops_charon if fault else None


def _ensure_root() -> None:
    try:
        netns.ensure_root()
    except EnvironmentProblem as err:
        raise LabError(f"the lab {err}") from None
