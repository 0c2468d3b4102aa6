"""Traces across several SSH hosts (tracer.lab.sshhosts): five router namespaces in a chain, each
running a real OpenSSH sshd, captured over SSH with real tcpdump from a management namespace.

* Multiplexing: each host sees exactly one SSH connection per trace (its sshd log counts the
  logins), so its node-state read, evidence readers, the tracer check and all three sniffers
  rode on the one master; and no master or socket outlives the trace.
* A host allowing fewer sessions per connection than a trace opens (sshd's MaxSessions): the
  rest connect on their own, and the manifest counts them.
* Remote extraction: with tracer on the hosts their points arrive as columns, the captures
  stay there (``kept_at``); the run directory, its columns swapped for those very captures,
  replays to the identical verdict (every probe, every time stamp). Without tracer on the
  hosts, whole captures come back (the fallback). A fault inside a host is located the same
  way in both modes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.json_contract import one_run
from tracer import netns
from tracer.cli import main
from tracer.lab import sshmode
from tracer.lab.sshhosts import KEPT_CACHE, HostsLab, mgmt_address, router
from tracer.run.manifest import MANIFEST
from tracer.ssh_mux import runtime_dir

pytestmark = pytest.mark.lab

HOSTS = 5
NAME = "sht"  # namespaces trc-sht-*
FAULT_HOST = router(3)


@pytest.fixture(scope="module")
def hosts() -> Iterator[HostsLab]:
    if os.geteuid() != 0:
        pytest.skip("the hosts lab needs root (CI runs as root)")
    lab = HostsLab(NAME, HOSTS, Path(f"/run/tracer/hosts-{NAME}"))
    try:
        yield lab.up()
    finally:
        lab.down()
        assert netns.list_with_prefix(f"trc-{NAME}-") == []


def logins(lab: HostsLab) -> list[int]:
    """Accepted SSH logins so far, per host (sshd logs one per connection)."""
    return [(lab.dir / router(k) / "sshd.log").read_text().count("Accepted publickey") for k in range(1, HOSTS + 1)]


def ping(lab: HostsLab, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["ping", "--topology", str(lab.topology_path), "a", "b", "--out", str(out), "--json"])
    return code, one_run(capsys.readouterr().out)


def replay(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    main(["replay", str(run_dir), "--json"])
    return one_run(capsys.readouterr().out)


def verdict(run: dict) -> dict:
    """What two live runs of the same network must agree on (their run ids and times differ)."""
    return {"status": run["status"], "summary": run["summary"], "findings": [
        {k: f[k] for k in ("direction", "outcome", "where", "count", "total")} for f in run["findings"]],
        "probes": [(p["direction"], p["seq"], p["outcome"], p["sightings"]) for p in run["probes"]]}


def with_whole_captures(run_dir: Path, to: Path) -> Path:
    """A copy of ``run_dir`` whose columns files are replaced by the captures they were extracted
    from (on this machine the hosts' /var/tmp is ours: a real host would be `ssh HOST cat PATH`)."""
    shutil.copytree(run_dir, to)
    manifest = json.loads((to / MANIFEST).read_text())
    for c in manifest["captures"]:
        if "kept_at" in c:
            _, path = c.pop("kept_at").split(":", 1)
            (to / c["file"]).unlink()
            c["file"] = Path(path).name
            shutil.copyfile(path, to / c["file"])
    (to / MANIFEST).write_text(json.dumps(manifest))
    (to / "run.pcapng").unlink(missing_ok=True)
    return to


def masters_left() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "ControlPersist" in line and f"/hosts-{NAME}/" in line]


def test_one_connection_per_host_and_extraction_gives_the_same_verdict(
        hosts: HostsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hosts.set_remote_tracer(True)
    before = logins(hosts)
    code, run = ping(hosts, tmp_path / "extract", capsys)
    assert code == 0, run["summary"]
    # One login per host for everything: state, evidence, the tracer check, 3 sniffers.
    assert [a - b for a, b in zip(logins(hosts), before, strict=True)] == [1] * HOSTS
    assert masters_left() == [] and not list(runtime_dir().glob(f"ssh-{os.getpid()}-*"))
    manifest = json.loads((tmp_path / "extract" / MANIFEST).read_text())
    assert manifest["ssh_masters"] | {"s": 0} == {"hosts": HOSTS, "opened": HOSTS, "extracting": HOSTS, "s": 0}
    remote = [c for c in manifest["captures"] if c.get("remote")]
    assert len(remote) == 3 * HOSTS  # eth0, eth1 and mgmt0 (a witness) of every host
    for c in remote:
        assert c["file"].endswith(".cols") and c["kept_at"].startswith("root@198.19.0.")
        kept = Path(c["kept_at"].split(":", 1)[1])
        assert kept.is_file()  # the capture stayed on the host, in a directory made for it alone
        assert kept.parent.parent == hosts.dir / KEPT_CACHE / "tracer" and kept.parent.stat().st_mode & 0o777 == 0o700
    assert len({Path(c["kept_at"].split(":", 1)[1]).parent for c in remote}) == len(remote)
    # The same run, replayed from the captures themselves: the identical verdict.
    whole = with_whole_captures(tmp_path / "extract", tmp_path / "extract-whole")
    a, b = replay(tmp_path / "extract", capsys), replay(whole, capsys)
    assert {k: v for k, v in a.items() if k != "warnings"} == {k: v for k, v in b.items() if k != "warnings"}
    assert verdict(a) == verdict(run)

    # Without tracer on the hosts: whole captures come back, over one connection per host too.
    hosts.set_remote_tracer(False)
    before = logins(hosts)
    code, plain = ping(hosts, tmp_path / "whole", capsys)
    assert code == 0, plain["summary"]
    assert [a - b for a, b in zip(logins(hosts), before, strict=True)] == [1] * HOSTS
    manifest = json.loads((tmp_path / "whole" / MANIFEST).read_text())
    assert manifest["ssh_masters"]["extracting"] == 0
    assert all(c["file"].endswith(".pcapng") and "kept_at" not in c for c in manifest["captures"])
    assert verdict(plain) == verdict(run)


def test_a_planted_symlink_is_not_followed_the_whole_capture_comes_back(
        hosts: HostsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The review's attack: the hosts' capture folder a symlink to somewhere root's tcpdump
    # would overwrite. No file is written through it; the points stream their whole capture.
    hosts.set_remote_tracer(True)
    base = hosts.dir / KEPT_CACHE / "tracer"
    shutil.rmtree(base, ignore_errors=True)
    base.parent.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    base.symlink_to(victim)
    try:
        code, run = ping(hosts, tmp_path / "sym", capsys)
    finally:
        base.unlink()
    assert code == 0, run["summary"]
    assert list(victim.iterdir()) == []
    manifest = json.loads((tmp_path / "sym" / MANIFEST).read_text())
    assert all(c["file"].endswith(".pcapng") and "kept_at" not in c for c in manifest["captures"])


@pytest.mark.parametrize("extract", [True, False], ids=["extracted", "whole"])
def test_a_drop_inside_a_host_is_located_either_way(
        hosts: HostsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str], extract: bool) -> None:
    hosts.set_remote_tracer(extract)
    ns = f"trc-{NAME}-{FAULT_HOST}"
    netns.ns_run(ns, ["nft", "-f", "-"], input="table inet fault { chain probe_drop { type filter hook forward priority 0; "
                 "icmp type echo-request drop; }; }\n")
    try:
        code, run = ping(hosts, tmp_path / "run", capsys)
    finally:
        netns.ns_run(ns, ["nft", "delete", "table", "inet", "fault"])
    assert code == 1, run["summary"]
    (f,) = [f for f in run["findings"] if f["outcome"] == "lost"]
    assert (f["direction"], f["where"], f["count"]) == ("request", f"inside {FAULT_HOST} between eth0 and eth1 "
                                                        "(forward)", 3)


def max_sessions(lab: HostsLab, k: int, n: int) -> None:
    """Host ``k``'s sshd reloaded (SIGHUP) with ``MaxSessions n``."""
    hdir, pid = lab.dir / router(k), lab.sshd[k - 1].pid
    config = hdir / sshmode.CONFIG
    config.write_text(re.sub(r"^MaxSessions \d+$", f"MaxSessions {n}", config.read_text(), flags=re.MULTILINE))
    (hdir / sshmode.PID_FILE).unlink()  # rewritten once the reloaded sshd listens again
    os.kill(pid, signal.SIGHUP)
    sshmode.wait_listening(hdir, pid, lambda: Path(f"/proc/{pid}").exists())


def test_sessions_past_max_sessions_connect_on_their_own_and_are_counted(
        hosts: HostsLab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A host allowing 2 sessions per connection: the trace works (ssh connects the rest on its
    own: more logins), and the manifest and a note say how many sessions the host refused."""
    hosts.set_remote_tracer(False)
    max_sessions(hosts, 2, 2)
    try:
        before = logins(hosts)
        code = main(["ping", "--topology", str(hosts.topology_path), "a", "b", "--out", str(tmp_path / "run"),
                     "--json"])
        out = capsys.readouterr()
    finally:
        max_sessions(hosts, 2, 64)
    run, err = one_run(out.out), out.err
    assert code == 0, run["summary"]
    grown = [a - b for a, b in zip(logins(hosts), before, strict=True)]
    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    target = f"root@{mgmt_address(2)}"
    refused = manifest["ssh_masters"]["refused"]
    assert list(refused) == [target] and grown[1] == 1 + refused[target] and grown[0] == 1, (grown, refused)
    assert f"tracer: note: {target} refused {refused[target]} multiplexed sessions" in err
