"""The lab's SSH mode (``Lab.up(ssh=True)``): a real OpenSSH server inside a gateway, for remote capture.

east-gw plays a remote box: ``sshd -D -f <labdir>/sshd_config`` runs in its
network namespace, listening only on its management interface ``mgmt0``
(203.0.113.2). The management namespace ``trc-<name>-mgmt`` plays the
engineer's laptop: the only thing it is linked to is ``mgmt0``, and the ssh
client runs inside it. Nothing here touches the root namespace, the host's
sshd or its keys:

* the host key and the client key are generated with ssh-keygen into the lab
  directory (mode 0600); ``authorized_keys`` there holds the client key with
  ``restrict`` (no pty, no forwarding), ``known_hosts`` there pins the host
  key, so the client keeps strict host key checking;
* the only host path used is ``/run/sshd``, the privilege-separation
  directory every sshd needs (created if missing, as the Debian service does);
* ``UsePAM no``: PAM's session modules (pam_loginuid) fail in containers and
  we only need key authentication.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from tracer import netns
from tracer.errors import LabError
from tracer.lab import build, layout
from tracer.ssh_client import ssh_argv

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself and refuses a relative path
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")
PORT = 22
USER = "root"  # tcpdump needs CAP_NET_RAW; in the lab, root is the simple honest choice

CONFIG = "sshd_config"
HOST_KEY = "ssh_host_ed25519_key"
CLIENT_KEY = "id_ed25519"
AUTHORIZED_KEYS = "authorized_keys"
KNOWN_HOSTS = "known_hosts"
PID_FILE = "sshd.pid"
LOG = "sshd.log"


@dataclass(frozen=True)
class Mgmt:
    """The management link: a laptop namespace and one gateway's sshd.

    Not part of the topology: it is how tracer reaches the box, not a path
    probes take. The gateway neither forwards from nor into ``gw_iface``.
    """

    node: str  # the management namespace's node name (trc-<lab>-mgmt)
    iface: str
    address: IPv4Interface
    gw: str  # the node that runs sshd, captured over SSH
    gw_iface: str
    gw_address: IPv4Interface


MGMT = Mgmt("mgmt", "eth0", IPv4Interface("203.0.113.10/24"), "east-gw", "mgmt0", IPv4Interface("203.0.113.2/24"))
ADDRESS = str(MGMT.gw_address.ip)  # where sshd listens
TARGET = f"{USER}@{ADDRESS}"

# The gateway must never route between its management link and the lab's data path
# (the management namespace is the engineer's laptop, not part of the network under
# test). Its own table, so clearing a fault never touches it.
NFT_TABLE = "tracer_mgmt"
ISOLATION = f"""table inet {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{MGMT.gw_iface}" counter drop comment "management link: not routed"
    oifname "{MGMT.gw_iface}" counter drop comment "management link: not routed"
  }}
}}
"""


def mgmt_netns(lab: str) -> str:
    return layout.netns_name(lab, MGMT.node)


def link(mgmt_ns: str, gw_ns: str) -> None:
    """Management namespace ↔ gateway's ``mgmt0``, never routed into the lab."""
    m = MGMT
    build.add_namespaces([mgmt_ns])
    netns.ip_batch([f"link add {m.gw_iface} netns {gw_ns} type veth peer name {m.iface} netns {mgmt_ns}"])
    # Connected routes only: the management namespace reaches 203.0.113.0/24 and nothing else.
    netns.ip_batch(["link set lo up", f"addr add {m.address} dev {m.iface}", f"link set {m.iface} up"], ns=mgmt_ns)
    netns.ip_batch([f"addr add {m.gw_address} dev {m.gw_iface}", f"link set {m.gw_iface} up"], ns=gw_ns)
    netns.write_sysctls(gw_ns, {f"net.ipv4.conf.{m.gw_iface}.forwarding": "0"})
    netns.ns_run(gw_ns, ["nft", "-f", "-"], input=ISOLATION)


def unlink(gw_ns: str) -> None:
    """Undo :func:`link` on the gateway side (deleting the management namespace removes the veth)."""
    netns.ns_run(gw_ns, ["nft", "-f", "-"], input=f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n",
                 check=False)


def check_tools() -> None:
    if not os.access(SSHD, os.X_OK):
        raise LabError(f"{SSHD} not found: apt-get install openssh-server")
    for tool, package in (("ssh", "openssh-client"), (SSH_KEYGEN, "openssh-client")):
        try:
            netns.ensure_tool(tool, package=package)
        except Exception as err:
            raise LabError(str(err)) from None


def write_files(lab_dir: Path, lab_name: str) -> None:
    """Keys, authorized_keys, known_hosts and sshd_config in ``lab_dir`` (private files 0600)."""
    write_keys(lab_dir, lab_name, [ADDRESS])
    _private(lab_dir / CONFIG, sshd_config(f"the sshd of lab '{lab_name}' (east-gw's namespace only)", ADDRESS,
                                           lab_dir, lab_dir))


def write_keys(lab_dir: Path, lab_name: str, addresses: list[str], environment: list[str] | None = None) -> None:
    """A host key and a client key (ssh-keygen, 0600), ``authorized_keys`` holding the client key
    with ``restrict`` (and ``environment``, NAME=value settings its sessions get, if given), and
    ``known_hosts`` pinning the host key for every address in ``addresses``."""
    for key, comment in ((HOST_KEY, f"tracer-lab-{lab_name}-host"), (CLIENT_KEY, f"tracer-lab-{lab_name}-client")):
        path = lab_dir / key
        path.unlink(missing_ok=True)
        path.with_suffix(".pub").unlink(missing_ok=True)
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
        path.chmod(0o600)
    authorize(lab_dir, environment)
    host_pub = " ".join((lab_dir / f"{HOST_KEY}.pub").read_text().split()[:2])  # type and key, no comment
    hosts = [a if PORT == 22 else f"[{a}]:{PORT}" for a in addresses]
    _private(lab_dir / KNOWN_HOSTS, "".join(f"{h} {host_pub}\n" for h in hosts))


def authorize(lab_dir: Path, environment: list[str] | None = None) -> None:
    """(Re)write ``authorized_keys``: the client key, ``restrict``ed, with ``environment`` (NAME=value
    each) if given. sshd reads it at every login, so this changes what the next session gets."""
    client_pub = (lab_dir / f"{CLIENT_KEY}.pub").read_text().strip()
    env = "".join(f',environment="{e}"' for e in environment or [])
    _private(lab_dir / AUTHORIZED_KEYS, f"restrict{env} {client_pub}\n")


def sshd_config(what: str, address: str, keys_dir: Path, run_dir: Path, extra: str = "") -> str:
    """An sshd_config listening on ``address`` only, keys from ``keys_dir`` (:func:`write_keys`),
    pid file and nothing else in ``run_dir``."""
    return f"""# Written by tracer lab: {what}.
ListenAddress {address}:{PORT}
HostKey {keys_dir / HOST_KEY}
PidFile {run_dir / PID_FILE}
AuthorizedKeysFile {keys_dir / AUTHORIZED_KEYS}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers {USER}
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
# Several capture points open their sessions at the same moment; over one multiplexed
# connection (tracer.ssh_mux) they are sessions of it.
MaxStartups 50:30:100
MaxSessions 64
# A lab host is a bare server, not this machine's root login: bash skips ~/.bashrc for an SSH
# command when SHLVL says it is nested (a developer's pyenv init there costs ~0.3 s a session).
SetEnv SHLVL=1
{extra}"""


def start_sshd(ns: str, lab_dir: Path) -> subprocess.Popen[bytes]:
    """Start sshd in the foreground inside ``ns``; the returned PID is sshd's (ip netns exec execs)."""
    # The privilege-separation directory is compiled in; the Debian unit creates it at boot.
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    (lab_dir / PID_FILE).unlink(missing_ok=True)
    return netns.ns_popen(
        ns,
        [SSHD, "-D", "-f", str(lab_dir / CONFIG), "-E", str(lab_dir / LOG)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # -E: everything goes to sshd.log
        start_new_session=True,  # a Ctrl-C meant for tracer must not kill the lab
    )


def wait_listening(lab_dir: Path, pid: int, alive: Callable[[], bool], timeout: float = 5.0) -> None:
    """sshd writes its PidFile after binding the listen socket: that file is the barrier."""
    deadline = time.monotonic() + timeout
    path = lab_dir / PID_FILE
    while True:
        try:
            if path.read_text().strip() == str(pid):
                return
        except FileNotFoundError:
            pass
        if not alive():
            raise LabError(f"sshd exited at startup: {last_log_line(lab_dir)}")
        if time.monotonic() > deadline:
            raise LabError(f"sshd did not listen within {timeout:.0f} s: {last_log_line(lab_dir)}")
        time.sleep(0.005)


def node_fields(lab_dir: Path, ssh_netns: str) -> dict[str, str]:
    """The Node fields (docs/topology.md) that make tracer capture on the gateway over SSH."""
    return {
        "capture": "ssh",
        "ssh": TARGET,
        "ssh_netns": ssh_netns,
        "ssh_key": str(lab_dir / CLIENT_KEY),
        "ssh_known_hosts": str(lab_dir / KNOWN_HOSTS),
    }


def check_login(ssh_netns: str, lab_dir: Path, timeout: float = 10.0) -> None:
    """One real login with the lab's key and known_hosts: a broken setup fails ``lab up``, not a trace."""
    # The very command line the SSH capture backend uses, so this proves what a trace needs.
    argv = ssh_argv(TARGET, 'PATH="$PATH:/usr/sbin:/sbin"; command -v tcpdump', ssh_netns,
                    lab_dir / CLIENT_KEY, PORT, lab_dir / KNOWN_HOSTS)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"ssh login to the lab's sshd timed out after {timeout:.0f} s: {last_log_line(lab_dir)}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip() or "tcpdump not found on the remote side").splitlines()[0]
        raise LabError(f"ssh login to the lab's sshd failed: {why}; sshd says: {last_log_line(lab_dir)}")


def last_log_line(lab_dir: Path) -> str:
    try:
        lines = (lab_dir / LOG).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(sshd logged nothing)"
    return lines[-1] if lines else "(sshd logged nothing)"


def _private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def _run(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise LabError(f"'{argv[0]}' not found: apt-get install openssh-client") from None
    if proc.returncode != 0:
        raise LabError(f"{argv[0]} failed: {(proc.stderr.strip() or 'no output').splitlines()[0]}")
