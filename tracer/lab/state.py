"""What a running lab consists of, recorded in ``state.json`` so another process can inspect or remove it.

Everything is recorded before it is created (namespaces before ``ip netns
add``, a fault before it is applied), so a build that dies half-way still
leaves a state ``tracer lab down`` can clean up. The JSON is the same shape
older tracers wrote (without ``version``), so their labs can still be taken
down; anything else is refused with the one command that helps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.errors import LabError
from tracer.lab.layout import LAB_NAME_RE
from tracer.lab.process import Proc

STATE_FILE = "state.json"  # in the lab directory
VERSION = 1  # bump when the JSON changes shape; files without it are version 1


@dataclass(frozen=True)
class SshMode:
    """``up(ssh=True)``: the management namespace and the sshd inside east-gw."""

    netns: str
    sshd: Proc | None = None  # None between recording the namespace and starting sshd


@dataclass(frozen=True)
class LabState:
    name: str
    namespaces: dict[str, str] = field(default_factory=dict)  # node → netns
    charon: dict[str, Proc] = field(default_factory=dict)  # gateway → its charon
    fault: str | None = None  # the active fault's name
    ssh: SshMode | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "version": VERSION,
            "name": self.name,
            "namespaces": dict(self.namespaces),
            "charon": {gw: _proc_json(p) for gw, p in self.charon.items()},
            "fault": self.fault,
        }
        if self.ssh is not None:
            doc["ssh"] = {"netns": self.ssh.netns, "sshd": _proc_json(self.ssh.sshd) if self.ssh.sshd else None}
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "state.json") -> LabState:
        """Parse ``to_json``'s output (or an older tracer's); a LabError naming the way out otherwise."""
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise _refused(source, None, f"not JSON: {e}") from None
        name = doc.get("name") if isinstance(doc, dict) else None
        try:
            version = doc.get("version", 1)
            if version != VERSION:
                raise ValueError(f"version {version}, this tracer reads {VERSION}")
            ssh = doc.get("ssh")
            return cls(
                name=_str(doc["name"]),
                namespaces={_str(k): _str(v) for k, v in doc["namespaces"].items()},
                charon={_str(gw): _proc(p) for gw, p in doc["charon"].items()},
                fault=None if doc.get("fault") is None else _str(doc["fault"]),
                ssh=None if ssh is None else SshMode(_str(ssh["netns"]), None if ssh.get("sshd") is None
                                                     else _proc(ssh["sshd"])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise _refused(source, name, _why(e)) from None


def read_state(path: Path) -> LabState | None:
    """The recorded state, or None when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return LabState.from_json(text, source=str(path))


def write_state(path: Path, state: LabState) -> LabState:
    """Replace the file atomically (a reader sees the old or the new state, never half); returns ``state``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(path)
    return state


def _proc_json(p: Proc) -> dict[str, int | None]:
    return {"pid": p.pid, "start": p.start}


def _proc(d: Any) -> Proc:
    pid, start = d["pid"], d.get("start")
    if not _is_int(pid) or not (start is None or _is_int(start)):
        raise ValueError(f"bad process record {d!r}")
    return Proc(pid, start)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _refused(source: str, name: Any, why: str) -> LabError:
    # The name only if it is a valid one: this text goes into a one-line error.
    lab = f" --name {name}" if isinstance(name, str) and LAB_NAME_RE.match(name) and name != "lab" else ""
    return LabError(f"{source}: lab state not understood ({why}); run 'tracer lab down{lab}' to remove that lab")


def _why(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"no {e.args[0]!r}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__
