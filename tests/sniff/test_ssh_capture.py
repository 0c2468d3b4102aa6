"""Remote capture over SSH: a real OpenSSH server in the lab's east-gw, reached from a management namespace.

The pure tests check the command lines and the remote wrapper script; the
``lab`` tests run real sshd, ssh and tcpdump (module-scoped lab ``sh``, built
with ``ssh=True``; the last test tears it down and checks nothing is left).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.json_contract import one_run
from tracer import netns
from tracer.capture.pcapfile import read_capture
from tracer.cli import main
from tracer.errors import EnvironmentProblem, TopologyError
from tracer.lab import Lab, layout, process, sshmode
from tracer.model.topology import Topology
from tracer.sniff.ssh import SshTcpdumpSniffer, remote_script
from tracer.ssh_client import ssh_argv
from tracer.topofile import dump_topology

LAB = "sh"  # namespaces trc-sh-*
LAB_SSH = True  # sshd in east-gw, east-gw captured over SSH
EAST_GW_POINTS = ("east-gw:wan0", "east-gw:ipsec0", "east-gw:lan0")


# -- pure: command lines, the remote script, topology keys -------------------------------------------


def test_ssh_argv_is_batch_and_strict() -> None:
    argv = ssh_argv("root@203.0.113.2", "true", "trc-x-mgmt", Path("/k/id"), 2222, Path("/k/known_hosts"))
    assert argv[:4] == ["ip", "netns", "exec", "trc-x-mgmt"]
    joined = " ".join(argv)
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/k/known_hosts", "IdentitiesOnly=yes"):
        assert opt in joined
    assert "-T" in argv and "-t" not in argv and "-tt" not in argv  # no pty: the pcap stream stays binary
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k/id"
    assert argv[-3:] == ["--", "root@203.0.113.2", "true"]
    plain = ssh_argv("gw1", "true")  # a real host: this namespace, ~/.ssh/config and known_hosts
    assert plain[0].endswith("ssh") and "UserKnownHostsFile" not in " ".join(plain)


def _fake_tcpdump(tmp_path: Path) -> Path:
    """A stand-in that behaves like tcpdump where we rely on it (stderr barrier, stats when terminated).

    A shell script cannot trap a signal that was ignored when it started, so it also proves
    the wrapper stops tcpdump with a signal a background job receives (TERM, not INT).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tcpdump"
    fake.write_text(
        "#!/bin/sh\n"
        'for a; do last="$a"; done\n'
        'echo "filter: $last" >&2\n'
        "trap 'echo \"3 packets captured\" >&2; echo \"0 packets dropped by kernel\" >&2; exit 0' INT TERM\n"
        'echo "tcpdump: listening on lo" >&2\n'
        "printf 'PCAP'\n"
        "while :; do sleep 0.01; done\n"
    )
    fake.chmod(0o755)
    return bin_dir


def test_remote_script_stops_on_a_line_or_eof_and_excludes_its_own_session(tmp_path: Path) -> None:
    bin_dir = _fake_tcpdump(tmp_path)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SSH_CONNECTION": "203.0.113.10 40000 203.0.113.2 22"}
    for stop in (b"stop\n", b""):  # a line, or just end-of-file (the connection went away)
        # Own process group, so a failure can take down the wrapper and its fake tcpdump together.
        proc = subprocess.Popen(["/bin/sh", "-c", remote_script("eth0", "icmp or esp", 1024)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        assert proc.stdin is not None
        try:
            time.sleep(0.2)
            proc.stdin.write(stop)
            proc.stdin.close()
            proc.stdin = None
            out, err = proc.communicate(timeout=5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0 and out == b"PCAP"
        text = err.decode()
        assert "filter: (icmp or esp) and not (tcp and host 203.0.113.10 and host 203.0.113.2 and port 22)" in text
        assert "0 packets dropped by kernel" in text


def test_remote_script_says_when_tcpdump_is_missing() -> None:
    # A host without tcpdump, for real: the script always searches /usr/sbin and /sbin, so
    # hide them behind empty tmpfs mounts in a private mount namespace (root, as in CI).
    if os.geteuid() != 0:
        pytest.skip("hiding /usr/sbin needs a mount namespace (root)")
    hide = 'for d in /usr/sbin /sbin; do [ -L "$d" ] || /usr/bin/mount -t tmpfs none "$d"; done; exec /bin/sh -c "$0"'
    proc = subprocess.run(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", hide,
                           remote_script("eth0", "icmp", 1024)], env={"PATH": "/nonexistent"},
                          capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
    assert proc.returncode == 127
    assert proc.stderr.startswith("tcpdump not found on the remote host (PATH=/nonexistent:/usr/sbin:/sbin)")


def test_lab_topology_marks_east_gw_for_ssh() -> None:
    fields = sshmode.node_fields(Path("/run/tracer/lab-sh"), "trc-sh-mgmt")
    topo = layout.topology("sh", {"east-gw": fields})
    assert Topology.from_dict(tomllib.loads(dump_topology(topo)), source=topo.source) == topo
    gw = topo.nodes["east-gw"]
    assert (gw.capture_backend, gw.ssh, gw.ssh_netns, gw.netns) == ("ssh", "root@203.0.113.2", "trc-sh-mgmt", "trc-sh-eastgw")
    assert gw.ssh_key == "/run/tracer/lab-sh/id_ed25519" and gw.ssh_known_hosts == "/run/tracer/lab-sh/known_hosts"
    assert topo.nodes["west-gw"].capture_backend == "local"
    assert layout.topology("sh") == layout.topology("sh", None)  # the default lab is unchanged


def _node(**extra: object) -> dict:
    return {"name": "t", "nodes": {"gw": {"interfaces": {"eth0": {"addresses": ["192.0.2.1/24"]}}, **extra},
                                   "peer": {"interfaces": {"eth0": {"addresses": ["192.0.2.2/24"]}}}},
            "links": [{"ends": ["gw:eth0", "peer:eth0"]}]}


def test_topology_ssh_keys_are_checked() -> None:
    assert Topology.from_dict(_node(ssh="gw1")).nodes["gw"].capture_backend == "ssh"  # ssh and no netns
    assert Topology.from_dict(_node(ssh="gw1", netns="n")).nodes["gw"].capture_backend == "local"
    assert Topology.from_dict(_node(ssh="gw1", netns="n", capture="ssh", ssh_port=2222)).nodes["gw"].ssh_port == 2222
    for bad, where in (({"capture": "ssh"}, "nodes.gw.capture"), ({"capture": "scp"}, "nodes.gw.capture"),
                       ({"ssh": "gw1", "ssh_port": 0}, "nodes.gw.ssh_port"), ({"ssh_key": 3}, "nodes.gw.ssh_key")):
        with pytest.raises(TopologyError, match=where):
            Topology.from_dict(_node(**bad))


# -- the real thing -----------------------------------------------------------------------------------




def ping(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], topology: Path | None = None) -> tuple[int, dict, Path]:
    out = tmp_path / f"run{time.monotonic_ns()}"
    code = main(["ping", "--topology", str(topology or lab.topology_path), "west", "east", "--out", str(out), "--json"])
    return code, one_run(capsys.readouterr().out), out


def _remote_tcpdumps(lab: Lab) -> list[int]:
    """tcpdump processes inside east-gw's namespace (only our SSH sessions start any there)."""
    out = []
    for pid in netns.pids(lab.namespace("east-gw")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "tcpdump":
                out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.lab
def test_ping_captures_east_gw_over_ssh(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, out = ping(lab, tmp_path, capsys)
    assert code == 0, doc["summary"]
    assert all(s == "seen" for p in doc["probes"] for s in p["sightings"])  # all 10 points, both directions
    manifest = json.loads((out / "manifest.json").read_text())
    caps = {c["point"]: c for c in manifest["captures"]}
    # The ten path points, plus the interface sshd listens on: real, not in the topology, so
    # captured as a witness (over SSH too) and named among the warnings.
    assert len(caps) == 11 and "east-gw:mgmt0" in caps and all(c["drops"] == 0 for c in caps.values())
    # Stopped by tracer's stop line, local and remote alike: none ended early (ssh exited 0).
    assert not [p for p, c in caps.items() if "ended_early" in c]
    assert "topology differs from the live network: east-gw: interface mgmt0 (203.0.113.2/24) is not in the " \
           "topology" in doc["warnings"]
    for point, c in caps.items():
        remote = point.startswith("east-gw:")
        assert c["backend"] == ("ssh" if remote else "tcpdump") and c.get("remote", False) is remote, point
    for point in EAST_GW_POINTS:  # valid pcapng, named node:iface, drop count carried in the file
        cap = read_capture(out / caps[point]["file"])
        assert len(cap) >= 6 and cap.interfaces[0].name == point and cap.interfaces[0].drops == 0
    assert not list(out.glob("*.tmp.pcap"))
    (note,) = [w for w in doc["warnings"] if w.startswith("clock of east-gw")]
    assert "both ways" in note  # one host, one clock: the estimate is close to zero
    assert abs(float(note.split("estimated at ")[1].split(" ms")[0])) < 1.0
    assert _remote_tcpdumps(lab) == []


@pytest.mark.lab
@pytest.mark.parametrize(
    ("fault", "where"),
    [
        ("esp-input-drop", "inside east-gw between wan0 and ipsec0 (decap, tunnel west-east)"),
        ("decap-drop", "inside east-gw between ipsec0 and lan0 (forward)"),
    ],
)
def test_fault_in_the_remote_node_is_located(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, where: str
) -> None:
    lab.set_fault(fault)
    try:
        code, doc, _ = ping(lab, tmp_path, capsys)
    finally:
        lab.clear_fault()
    assert code == 1, doc["summary"]
    (f,) = [f for f in doc["findings"] if f["direction"] == "request" and f["outcome"] == "lost"]
    assert (f["where"], f["count"], f["total"]) == (where, 3, 3)
    assert any(w.startswith("clock of east-gw estimated") for w in doc["warnings"])
    # Kernel drop reasons are read on this host only: the verdict says so, once, and still
    # cites the evidence it has (east-gw's firewall rule counter, read over SSH).
    unavailable = [e for e in f["evidence"] if e.startswith("kernel drop reasons unavailable")]
    assert unavailable == ["kernel drop reasons unavailable (captured over SSH: kernel drop reasons are read on "
                           "this host only)"], f["evidence"]
    assert f["reason"].startswith("east-gw's firewall dropped them: nft rule"), f["reason"]


@pytest.mark.lab
def test_ssh_failures_are_one_line_environment_problems(lab: Lab, tmp_path: Path) -> None:
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    keys = {"key": lab.dir / sshmode.CLIENT_KEY, "known_hosts": lab.dir / sshmode.KNOWN_HOSTS}
    cases = [
        ("root@203.0.113.2", "wan0", {"key": other_key}, "Permission denied (publickey)"),
        ("root@203.0.113.2", "wan0", {"known_hosts": empty_known_hosts}, "host key is known"),
        ("root@198.51.100.99", "wan0", {}, "Network is unreachable"),  # no route from the management namespace
        ("root@203.0.113.2", "nosuch0", {}, "nosuch0: No such device"),
    ]
    for target, iface, extra, why in cases:
        s = SshTcpdumpSniffer(f"east-gw:{iface}", target, iface, tmp_path / f"{iface}.pcapng", "icmp",
                              ssh_netns=lab_ssh_netns(lab), **(keys | extra))
        s.start()
        with pytest.raises(EnvironmentProblem) as err:
            s.wait_ready(time.monotonic() + 5)
        msg = str(err.value)
        assert msg.startswith(f"sniffer on east-gw:{iface} did not start: ") and why in msg and "\n" not in msg, msg
        with pytest.raises(EnvironmentProblem, match="did not start"):  # stop() repeats the cause
            s.stop()
        assert s.proc is not None and s.proc.poll() is not None
    assert _remote_tcpdumps(lab) == []


def lab_ssh_netns(lab: Lab) -> str:
    return sshmode.mgmt_netns(lab.name)


@pytest.mark.lab
def test_cli_with_a_wrong_key_exits_4_in_one_line(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other_key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    topo = tmp_path / "topology.toml"
    topo.write_text(lab.topology_path.read_text().replace(str(lab.dir / sshmode.CLIENT_KEY), str(other_key)))
    code = main(["ping", "--topology", str(topo), "west", "east", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 4 and err.count("\n") == 1, err
    assert "sniffer on east-gw:" in err and "Permission denied (publickey)" in err
    assert _remote_tcpdumps(lab) == []


@pytest.mark.lab
def test_remote_tcpdump_never_outlives_its_session(lab: Lab, tmp_path: Path) -> None:
    # tracer killed hard mid-capture: the connection drops, the remote wrapper reads EOF and stops tcpdump.
    s = SshTcpdumpSniffer("east-gw:wan0", "root@203.0.113.2", "wan0", tmp_path / "w.pcapng", "icmp",
                          ssh_netns=lab_ssh_netns(lab), key=lab.dir / sshmode.CLIENT_KEY,
                          known_hosts=lab.dir / sshmode.KNOWN_HOSTS)
    s.start()
    s.wait_ready(time.monotonic() + 5)
    assert len(_remote_tcpdumps(lab)) == 1
    assert s.proc is not None
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait()
    deadline = time.monotonic() + 5
    while _remote_tcpdumps(lab) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _remote_tcpdumps(lab) == []
    result = s.stop()  # what arrived is still a valid capture; the drop count is unknown, not zero
    assert result.drops is None and read_capture(result.file).interfaces[0].name == "east-gw:wan0"


@pytest.mark.lab
def test_management_link_is_not_routed_into_the_lab(lab: Lab) -> None:
    mgmt = lab_ssh_netns(lab)
    routes = netns.ip(["-4", "-o", "route", "show"], ns=mgmt).stdout.split("\n")
    assert [r.split()[0] for r in routes if r] == ["203.0.113.0/24"]
    # Even with a route via east-gw, nothing from the laptop gets into the data path...
    netns.ip(["route", "add", "default", "via", "203.0.113.2"], ns=mgmt)
    try:
        into = netns.ns_run(mgmt, ["ping", "-c", "1", "-W", "1", "198.51.100.10"], check=False)
    finally:
        netns.ip(["route", "del", "default"], ns=mgmt)
    assert into.returncode != 0
    # ... and nothing from the data path gets to the laptop (east routes it to east-gw; east-gw drops it).
    out = netns.ns_run(lab.namespace("east"), ["ping", "-c", "1", "-W", "1", "203.0.113.10"], check=False)
    assert out.returncode != 0
    table = netns.ns_run(lab.namespace("east-gw"), ["nft", "-j", "list", "table", "inet", "tracer_mgmt"]).stdout
    counters = [e["counter"]["packets"] for item in json.loads(table)["nftables"] for e in item.get("rule", {}).get("expr", [])
                if "counter" in e]
    assert sum(counters) >= 1


@pytest.mark.lab
def test_down_leaves_no_sshd_and_no_namespace(lab: Lab) -> None:
    state = json.loads((lab.dir / "state.json").read_text())
    sshd = state["ssh"]["sshd"]["pid"]
    assert Path(f"/proc/{sshd}/exe").resolve() == Path(sshmode.SSHD).resolve()
    st = lab.status()
    assert st["up"] and st["ssh"]["sshd_alive"] and st["ssh"]["netns"] == f"trc-{LAB}-mgmt"
    lab.down()
    assert not process.alive(sshd, None)
    assert netns.list_with_prefix(layout.ns_prefix(LAB)) == []
    assert not lab.dir.exists()
    # No sshd of ours anywhere (its config path is unique to this lab).
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, str(lab.dir))]


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False

