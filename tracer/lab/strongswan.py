"""Run one strongSwan charon per gateway namespace and talk to it with swanctl.

The kernel has no ESP/xfrm, so charon's ``kernel-libipsec`` plugin does ESP
in user space: it creates the TUN device ``ipsec0``, routes the remote subnet
into it (table 220) and always sends ESP inside UDP 4500.

charon's pid file (/run/charon.pid) is a compile-time path and there is one
charon per gateway, so each charon runs in a private mount namespace where its
gateway directory is bind-mounted over /run: the pid file, the vici socket and
the logs all land in that directory, and ``swanctl --uri`` reaches the socket
from the root mount namespace at its real path. Nothing of the host's /etc or
/run is touched.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer import netns
from tracer.errors import EnvironmentProblem, LabError
from tracer.model.topology import Tunnel, TunnelEnd
from tracer.swanctl_raw import list_sas_events

CHARON = "/usr/lib/ipsec/charon"
SWANCTL = "swanctl"

# Debian ships kernel-libipsec with "load = no", so the list is explicit.
# kernel-libipsec must come before kernel-netlink: the first kernel-ipsec
# interface registered wins, and kernel-netlink's (xfrm) would fail here.
# kdf provides the IKEv2 PRF+ since 5.9.8; openssl does the crypto.
CHARON_PLUGINS = (
    "random nonce openssl kdf pem pkcs1 x509 pubkey "
    "socket-default kernel-libipsec kernel-netlink vici"
)
SWANCTL_PLUGINS = "random nonce openssl pem pkcs1 x509 pubkey"

IKE_PROPOSAL = "aes128-sha256-x25519"  # fixed, so a decrypting tracer knows what to expect
ESP_PROPOSAL = "aes128gcm16"  # no PFS: CHILD keys come from SK_d and the nonces

# Inside charon's mount namespace the gateway directory *is* /run.
_IN_NS = Path("/run")
CONF = "strongswan.conf"
SWANCTL_CONF = "swanctl/swanctl.conf"
LOG = "charon.log"  # levels 1-2, no secrets: safe to show
KEYS_LOG = "keys.log"  # ike/chd level 4: IKE and CHILD_SA keys, mode 0600
VICI = "charon.vici"
OUT = "charon.out"  # charon's own stdout/stderr (startup failures)


@dataclass(frozen=True)
class GatewayConfig:
    conn: str
    local: str
    remote: str
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    psk: str


def gateway_configs(tunnel: Tunnel, psk: str) -> dict[str, GatewayConfig]:
    """Both ends of ``tunnel``, by gateway node: each end's view of the same connection."""
    def config(local: TunnelEnd, remote: TunnelEnd) -> GatewayConfig:
        return GatewayConfig(tunnel.name, str(local.address), str(remote.address),
                             tuple(map(str, local.subnets)), tuple(map(str, remote.subnets)), psk)

    return {tunnel.left.node: config(tunnel.left, tunnel.right), tunnel.right.node: config(tunnel.right, tunnel.left)}


def check_tools() -> None:
    """swanctl, charon, every plugin charon is told to load, and TUN devices."""
    for tool, package in ((SWANCTL, "strongswan-swanctl"), ("unshare", "util-linux")):
        try:
            netns.ensure_tool(tool, package=package)
        except EnvironmentProblem as err:
            raise LabError(str(err)) from None
    if not os.access(CHARON, os.X_OK):
        raise LabError(f"{CHARON} not found: apt-get install strongswan-charon libcharon-extra-plugins")
    # Each plugin charon is told to load must be there, or IKE fails later with an obscure
    # "no ... proposal" (openssl, for instance, is only a Recommends of Debian's libstrongswan).
    for plugin in CHARON_PLUGINS.split():
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


def write_config(gw_dir: Path, cfg: GatewayConfig) -> None:
    """Write strongswan.conf and swanctl.conf for one gateway (dir mode 0700: PSK, keys)."""
    gw_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (gw_dir / "swanctl").mkdir(mode=0o700, exist_ok=True)
    (gw_dir / CONF).write_text(
        f"""# Written by tracer lab. Paths are as charon sees them: {gw_dir} is bind-mounted on /run.
charon {{
  load = {CHARON_PLUGINS}
  install_routes = yes
  plugins {{
    vici {{
      socket = unix://{_IN_NS / VICI}
    }}
  }}
  filelog {{
    log {{
      path = {_IN_NS / LOG}
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      ike_name = yes
    }}
    keys {{
      path = {_IN_NS / KEYS_LOG}
      flush_line = yes
      default = 0
      ike = 4
      chd = 4
    }}
  }}
}}
swanctl {{
  load = {SWANCTL_PLUGINS}
}}
"""
    )
    swanctl = gw_dir / SWANCTL_CONF
    swanctl.touch(mode=0o600)
    swanctl.write_text(
        f"""# Written by tracer lab.
connections {{
  {cfg.conn} {{
    version = 2
    local_addrs = {cfg.local}
    remote_addrs = {cfg.remote}
    proposals = {IKE_PROPOSAL}
    # kernel-libipsec can only do ESP in UDP; say so instead of relying on it.
    encap = yes
    mobike = no
    dpd_delay = 0
    local {{
      auth = psk
      id = {cfg.local}
    }}
    remote {{
      auth = psk
      id = {cfg.remote}
    }}
    children {{
      {cfg.conn} {{
        local_ts = {", ".join(cfg.local_ts)}
        remote_ts = {", ".join(cfg.remote_ts)}
        esp_proposals = {ESP_PROPOSAL}
        start_action = none
        # No time-based rekeying: the CHILD_SA keys the lab exports (esp_sa) stay valid
        # for as long as the lab runs; lab commands that re-establish SAs re-export them.
        rekey_time = 0
      }}
    }}
  }}
}}
secrets {{
  ike-{cfg.conn} {{
    id-local = {cfg.local}
    id-remote = {cfg.remote}
    secret = 0x{cfg.psk}
  }}
}}
"""
    )
    # Pre-create the logs: charon opens them in append mode and keeps our modes.
    for name, mode in ((LOG, 0o644), (KEYS_LOG, 0o600), (OUT, 0o644)):
        path = gw_dir / name
        path.touch(mode=mode)
        path.chmod(mode)


def evidence_fields(gw_dir: Path) -> dict[str, str]:
    """The topology keys that let a trace read this charon's SAs and log as evidence."""
    return {"ike_vici": f"unix://{gw_dir / VICI}", "ike_log": str(gw_dir / LOG)}


def start_charon(ns: str, gw_dir: Path) -> subprocess.Popen[bytes]:
    """Start charon in ``ns`` with ``gw_dir`` on /run; the returned PID is charon's."""
    if not os.access(CHARON, os.X_OK):
        raise LabError(f"{CHARON} not found: apt-get install strongswan-charon libcharon-extra-plugins")
    sock = gw_dir / VICI
    if len(str(sock)) >= 108:  # sun_path limit
        raise LabError(f"state directory path too long for a unix socket: {sock}")
    # ip netns exec, unshare and sh all exec, so the PID stays charon's.
    script = f'mount --bind "$0" {_IN_NS} && exec {CHARON}'
    with open(gw_dir / OUT, "ab") as out:
        return netns.ns_popen(
            ns,
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(gw_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "STRONGSWAN_CONF": str(_IN_NS / CONF)},
            start_new_session=True,  # a Ctrl-C meant for tracer must not kill the lab
        )


def wait_vici(gw_dir: Path, alive: Any, timeout: float = 5.0) -> None:
    """Wait until charon's vici socket exists; ``alive()`` says whether charon still runs."""
    deadline = time.monotonic() + timeout
    while not (gw_dir / VICI).is_socket():
        if not alive():
            raise LabError(f"charon in {gw_dir.name} exited at startup: {last_log_line(gw_dir)}")
        if time.monotonic() > deadline:
            raise LabError(f"charon in {gw_dir.name} opened no vici socket in {timeout:.0f} s: {last_log_line(gw_dir)}")
        time.sleep(0.005)


def swanctl(
    gw_dir: Path, *args: str, timeout: float = 10.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run swanctl against this gateway's charon (from the root mount namespace)."""
    argv = [SWANCTL, *args, "--uri", f"unix://{gw_dir / VICI}"]
    env = {**os.environ, "STRONGSWAN_CONF": str(gw_dir / CONF)}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        raise LabError("swanctl not found: apt-get install strongswan-swanctl") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"swanctl {' '.join(args)} on {gw_dir.name} timed out after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise LabError(f"swanctl {args[0]} on {gw_dir.name} failed: {msg}")
    return proc


def load(gw_dir: Path) -> None:
    swanctl(gw_dir, "--load-all", "--file", str(gw_dir / SWANCTL_CONF))


def initiate(gw_dir: Path, child: str, timeout: float) -> bool:
    """Initiate ``child``; True once it is installed, False on failure or timeout.

    When swanctl gives up waiting, charon keeps retransmitting on its own.
    """
    secs = max(1, round(timeout))
    proc = swanctl(
        gw_dir, "--initiate", "--child", child, "--timeout", str(secs), "--loglevel", "-1",
        timeout=secs + 5, check=False,
    )
    return proc.returncode == 0


def terminate(gw_dir: Path, ike: str) -> None:
    """Drop every IKE_SA of ``ike`` at once (no DELETE round trip: the peer may be unreachable)."""
    # --force without --timeout destroys at once; with a timeout vici would wait it out first.
    swanctl(gw_dir, "--terminate", "--ike", ike, "--force", "--loglevel", "-1", check=False)


def list_sas(gw_dir: Path) -> list[dict[str, Any]]:
    """IKE_SAs with their CHILD_SAs, from ``swanctl --list-sas --raw``."""
    return list_sas_events(swanctl(gw_dir, "--list-sas", "--raw", "--noblock").stdout)


def summarize(sas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields of list_sas a human or a test needs, JSON-ready."""
    out = []
    for sa in sas:
        children = []
        for child in sa.get("child-sas", {}).values():
            children.append(
                {
                    "name": child.get("name"),
                    "state": child.get("state"),
                    "mode": child.get("mode"),
                    "protocol": child.get("protocol"),
                    "encap": child.get("encap") == "yes",
                    "spi_in": "0x" + child.get("spi-in", ""),
                    "spi_out": "0x" + child.get("spi-out", ""),
                    "encryption": child.get("encr-alg"),
                    "packets_in": int(child.get("packets-in", 0)),
                    "packets_out": int(child.get("packets-out", 0)),
                    "local_ts": child.get("local-ts", []),
                    "remote_ts": child.get("remote-ts", []),
                }
            )
        out.append(
            {
                "name": sa["name"],
                "state": sa.get("state"),
                "initiator": sa.get("initiator") == "yes",
                "local": f"{sa.get('local-host')}[{sa.get('local-port')}]",
                "remote": f"{sa.get('remote-host')}[{sa.get('remote-port')}]",
                "initiator_spi": sa.get("initiator-spi"),
                "responder_spi": sa.get("responder-spi"),
                "child_sas": children,
            }
        )
    return out


def child_installed(sas: list[dict[str, Any]], child: str) -> bool:
    return any(
        c.get("name") == child and c.get("state") == "INSTALLED"
        for sa in sas
        if sa.get("state") == "ESTABLISHED"
        for c in sa.get("child-sas", {}).values()
    )


def last_log_line(gw_dir: Path) -> str:
    """The last line charon logged (without the timestamp), for one-line errors."""
    for name in (LOG, OUT):
        try:
            lines = (gw_dir / name).read_text(errors="replace").strip().splitlines()
        except OSError:
            continue
        if lines:
            return re.sub(r"^\d\d:\d\d:\d\d ", "", lines[-1]).strip()
    return "(charon logged nothing)"


# --- CHILD_SA keys ----------------------------------------------------------
#
# keys.log (charon's "chd 4") holds, per CHILD_SA, lines like
#   09[CHD] encryption initiator key => 20 bytes @ 0x7f...
#   09[CHD]    0: F2 76 D1 67 B8 28 3D 8E 3B 91 53 DF F9 A3 8A BE  .v.g.(=.;.S.....
#   09[CHD]   16: EE 43 D5 2A                                      .C.*
#   09[CHD] encryption responder key => 20 bytes @ 0x7f...
# followed on the same thread by (ike 1)
#   09[IKE] CHILD_SA west-east{1} established with SPIs c1a2b3c4_i c5d6e7f8_o and TS ...
# "initiator key" protects the CHILD_SA initiator -> responder direction.

_KEY_HDR = re.compile(r"^(\d+)\[CHD\] (encryption|integrity) (initiator|responder) key => (\d+) bytes")
_HEX = re.compile(r"^(\d+)\[CHD\]\s+\d+: ((?:[0-9A-F]{2} )+)")
CHILD_ESTABLISHED = re.compile(
    r"^(\d+)\[IKE\] (?:<[^>]*> )?CHILD_SA (\S+)\{(\d+)\} established with SPIs ([0-9a-f]{8})_i ([0-9a-f]{8})_o"
)


@dataclass(frozen=True)
class ChildSaKeys:
    """Keys of one CHILD_SA as one gateway logged them (treat as secret)."""

    name: str
    unique_id: int
    spi_in: int
    spi_out: int
    encr_initiator: bytes
    encr_responder: bytes
    integ_initiator: bytes
    integ_responder: bytes

    def __repr__(self) -> str:  # never print keys by accident
        return f"ChildSaKeys({self.name}{{{self.unique_id}}} in=0x{self.spi_in:08x} out=0x{self.spi_out:08x})"


def child_sa_keys(keys_log: str) -> list[ChildSaKeys]:
    """Parse the CHILD_SA keys out of a ``keys.log`` text."""
    pending: dict[str, dict[str, bytearray]] = {}  # thread -> key name -> bytes
    current: dict[str, bytearray | None] = {}
    found: list[ChildSaKeys] = []
    for line in keys_log.splitlines():
        if m := _KEY_HDR.match(line):
            thread = m.group(1)
            buf = bytearray()
            pending.setdefault(thread, {})[f"{m.group(2)}_{m.group(3)}"] = buf
            current[thread] = buf
        elif (m := _HEX.match(line)) and current.get(m.group(1)) is not None:
            current[m.group(1)].extend(bytes.fromhex(m.group(2)))  # type: ignore[union-attr]
        elif m := CHILD_ESTABLISHED.match(line):
            thread = m.group(1)
            keys = pending.pop(thread, {})
            current.pop(thread, None)
            found.append(
                ChildSaKeys(
                    name=m.group(2),
                    unique_id=int(m.group(3)),
                    spi_in=int(m.group(4), 16),
                    spi_out=int(m.group(5), 16),
                    encr_initiator=bytes(keys.get("encryption_initiator", b"")),
                    encr_responder=bytes(keys.get("encryption_responder", b"")),
                    integ_initiator=bytes(keys.get("integrity_initiator", b"")),
                    integ_responder=bytes(keys.get("integrity_responder", b"")),
                )
            )
        else:
            # Any other line of a thread ends its hex dump.
            t = line.split("[", 1)[0]
            if t.isdigit():
                current[t] = None
    return found
