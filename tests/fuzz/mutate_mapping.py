"""Command-line cases for ``tracer replay`` of loose capture files: how files become capture points.

A case (deterministic given its number) lays out a recorded scenario's captures in a fresh folder,
each point's packets placed one of several ways:

* *faithful* placements, which must give the scenario's verdict: a pcapng whose interface name is
  the point in any separator form; a classic pcap (no names) named after the point
  (``node_iface.pcap``, ``node-iface.cap``, ``node__iface.pcapng``, ``node:iface``); a file under any
  name mapped by ``--point`` or by a ``--points`` mapping file (point in any separator form, path
  relative or absolute); a multi-interface pcapng holding several of a node's interfaces (named
  by bare interface names in a file named after the node, or by full point names);
* *hostile* placements and options, which need only fail cleanly: a mapping file that is huge,
  a FIFO, a directory, holds NUL bytes, bad UTF-8, newlines or control characters in its points,
  traversal or device paths, wrong value types, deep nesting, a list repeated thousands of times;
  ``--point`` without ``=``, with a hostile point or file; a FIFO, device, directory or empty file
  as a capture; file names with newlines, spaces, leading dashes; pcapng interface names with
  newlines, NUL bytes, traversal paths, points of unknown nodes; two files for one point.

``build(case, scenarios, folder)`` writes the files and returns (argv after ``tracer``, the
mutations, whether the case is faithful).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.mutate import pcap_from_pcapng
from tracer.capture.pcapfile import read_capture
from tracer.capture.pcapng_writer import Interface, write_pcapng, write_pcapng_interfaces

SEPS = (":", "_", "-", "__")
SUFFIXES = (".pcapng", ".pcap", ".cap")
HOSTILE_NAMES = ("a\nb", "west:eth0\n", "west:eth0\x00", "../../x", "/abs/path", "west:../../x", "nosuch:eth0",
                 "west:", ":eth0", "", " ", "x" * 300, "west:eth0\r", "west:\u2028eth0", "-oProxyCommand=x",
                 "west:eth0 ", "WEST:ETH0", "west:eth0:eth0", "west::eth0", "ünï:eth0")
HOSTILE_PATHS = ("../../../../../../etc/passwd", "/dev/zero", "/dev/null", "/proc/self/status", ".", "..", "",
                 "nosuch.pcap", "/", "a\nb.pcap", "fifo.pcap", "zero.pcap", "dir.pcap", "empty.pcap")


@dataclass(frozen=True)
class Seed:
    """A recorded scenario's captures: point → (link type, records, the file's bytes)."""

    name: str
    topology: Path
    points: dict[str, tuple[int, list[tuple[int, bytes, int]], bytes]]


def load_seed(run_dir: Path) -> Seed:
    points = {}
    for f in sorted(run_dir.glob("*.pcapng")):
        cap = read_capture(f)
        point = cap.interfaces[0].name
        assert point and ":" in point, f
        recs = [(int(cap.ts_ns[i]), cap.frame(i), int(cap.wire_len[i])) for i in range(len(cap))]
        points[point] = (cap.interfaces[0].linktype, recs, f.read_bytes())
    return Seed(run_dir.name, run_dir / "topology.toml", points)


def classic(raw: bytes, rng: random.Random) -> bytes:
    """The pcapng as a classic pcap (no interface name), nanosecond (times kept exact), either byte order."""
    return pcap_from_pcapng(raw, bo=rng.choice("<>"), nano=True)


def form(point: str, rng: random.Random) -> str:
    node, iface = point.rsplit(":", 1)
    return node + rng.choice(SEPS) + iface


def _specials(folder: Path) -> None:
    """The hostile files a case may name: a FIFO, /dev/zero under a capture name, a directory, an empty file."""
    if not (folder / "fifo.pcap").exists():
        os.mkfifo(folder / "fifo.pcap")
        (folder / "zero.pcap").symlink_to("/dev/zero")
        (folder / "dir.pcap").mkdir()
        (folder / "empty.pcap").write_bytes(b"")


def _toml_str(text: str) -> str:
    """A TOML basic string (escapes control characters, as a person or tool writing TOML would)."""
    out = "".join(c if c >= " " and c not in '"\\\x7f' else f"\\u{ord(c):04x}" for c in text)
    return f'"{out}"'


def _hostile_points_file(rng: random.Random, folder: Path, good: list[tuple[str, str]]) -> tuple[Path, str]:
    """A mapping file that must be refused or survived: its path and what is wrong with it."""
    lines = "".join(f"{_toml_str(p)} = {_toml_str(f)}\n" for p, f in good)
    path = folder / "points.toml"
    kind = rng.randrange(13)
    if kind == 0:
        path.write_text("# padding\n" * (5 * 1024 * 1024 // 10) + lines)
        return path, "points file over 4 MiB"
    if kind == 1:
        _specials(folder)
        return folder / "fifo.pcap", "points file is a FIFO"
    if kind == 2:
        _specials(folder)
        return folder / rng.choice(("zero.pcap", "dir.pcap", "empty.pcap")), "points file is a device/dir/empty"
    if kind == 3:
        at = rng.randrange(len(lines) + 1)
        path.write_bytes(lines[:at].encode() + b"\x00" + lines[at:].encode())
        return path, f"NUL byte at {at}"
    if kind == 4:
        path.write_bytes(lines.encode() + b'"west:eth0" = "\xff\xfe.pcap"\n')
        return path, "bad UTF-8"
    if kind == 5:
        name = rng.choice(HOSTILE_NAMES)
        path.write_text(lines + f"{_toml_str(name)} = {_toml_str(good[0][1])}\n")
        return path, f"hostile point {name!r}"
    if kind == 6:
        _specials(folder)
        target = rng.choice(HOSTILE_PATHS)
        path.write_text(lines + f"{_toml_str(rng.choice(good)[0])} = {_toml_str(target)}\n")
        return path, f"hostile path {target!r}"
    if kind == 7:
        value = rng.choice(("1", "true", "1.5", "[]", '[""]', "{}", '{a = "b"}', '[["x"]]', '[1, "x"]', '"""\nx\n"""'))
        path.write_text(lines + f'"west:eth0" = {value}\n')
        return path, f"value {value}"
    if kind == 8:
        path.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n" + lines)
        return path, "deeply nested array"
    if kind == 9:
        p, f = rng.choice(good)
        path.write_text(lines + f"{_toml_str(p)} = [" + ", ".join([_toml_str(f)] * 20000) + "]\n")
        return path, "one file listed 20000 times"
    if kind == 10:
        path.write_text(lines + lines[: rng.randrange(1, max(2, len(lines)))])
        return path, "duplicate keys / cut line"
    if kind == 11:
        p, f = rng.choice(good)
        q = rng.choice([x for x, _ in good if x != p] or [p])
        path.write_text(lines + f"{_toml_str(q)} = {_toml_str(f)}\n")  # one file, two points
        return path, f"{f} also mapped to {q}"
    lines_b = lines.encode()
    at = rng.randrange(len(lines_b) + 1)
    path.write_bytes(lines_b[:at] + bytes([rng.randrange(256)]) + lines_b[at:])
    return path, f"a byte inserted at {at}"


def build(case: int, seeds: list[Seed], folder: Path) -> tuple[list[str], list[str], bool]:
    rng = random.Random(case)
    seed = seeds[case % len(seeds)]
    folder.mkdir(parents=True)
    hostile = rng.random() < 0.5
    desc = [seed.name]
    inputs: list[str] = []
    options: list[str] = []
    mapped: list[tuple[str, str]] = []  # (point form, file) for --point / --points
    points = list(seed.points)
    rng.shuffle(points)
    k = 0
    while points:
        point = points.pop()
        linktype, recs, raw = seed.points[point]
        node = point.rsplit(":", 1)[0]
        how = rng.choice(("pcapng name", "file name", "option", "option", "merge"))
        k += 1
        if how == "merge":  # this point and the node's other remaining ones in one multi-interface pcapng
            group = [point] + [p for p in points if p.startswith(node + ":") and rng.random() < 0.8]
            points = [p for p in points if p not in group]
            bare = rng.random() < 0.5
            name = f"{node}{rng.choice(SUFFIXES)}" if bare else f"multi{k}.pcapng"
            if (folder / name).exists():  # the node's file is taken (a second group of it)
                name = f"{node}{SEPS[1]}more{k}.pcapng"
            ifaces = [Interface(p.rsplit(":", 1)[1] if bare else form(p, rng), seed.points[p][0]) for p in group]
            records = sorted(((i, ts, fr, wl, None) for i, p in enumerate(group) for ts, fr, wl in seed.points[p][1]),
                             key=lambda r: r[1])
            write_pcapng_interfaces(folder / name, ifaces, records)
            inputs.append(name)
            desc.append(f"{'+'.join(group)} merged in {name} ({'bare' if bare else 'full'} names)")
        elif how == "pcapng name":
            name = f"capture{k}.pcapng"
            write_pcapng(folder / name, recs, if_name=form(point, rng), linktype=linktype)
            inputs.append(name)
            desc.append(f"{point} as {name}, pcapng name")
        elif how == "file name":
            name = form(point, rng) + rng.choice(SUFFIXES)
            (folder / name).write_bytes(classic(raw, rng))
            inputs.append(name)
            desc.append(f"{point} as classic pcap {name}")
        else:
            name = rng.choice((f"f{k}.pcap", f"sub/f{k}.pcap", f"with space {k}.pcap", f"-dash{k}.pcap",
                               f"ünï{k}.cap", f"odd\tname{k}"))
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(classic(raw, rng) if rng.random() < 0.5 else raw)
            mapped.append((form(point, rng), name))
            if rng.random() < 0.3:
                inputs.append(name)  # also given as an input: the option still decides
            desc.append(f"{point} as {name!r}, by option")
    if not inputs:  # replay takes at least one input: a mapped file given as one too
        inputs.append(mapped[0][1])
    use_file = bool(mapped) and rng.random() < 0.6
    if hostile:
        _specials(folder)
        what = rng.randrange(6)
        if what == 0 or (what == 1 and not mapped):
            path, why = _hostile_points_file(rng, folder, mapped or [("west:eth0", "nosuch.pcap")])
            options += ["--points", str(path)]
            use_file = False
            desc.append(f"--points: {why}")
        elif what == 1:
            p = rng.choice(HOSTILE_NAMES + tuple(x for x, _ in mapped))
            f = rng.choice(HOSTILE_PATHS + tuple(x for _, x in mapped))
            f = str(folder / f)
            arg = rng.choice((f"{p}={f}", p, f"={f}", f"{p}=", f"{p}=={f}"))
            options += ["--point", arg]
            desc.append(f"--point {arg!r}")
        elif what == 2:
            bad = rng.choice(("fifo.pcap", "zero.pcap", "dir.pcap", "empty.pcap", "nosuch.pcap", "/dev/null"))
            inputs.insert(rng.randrange(len(inputs) + 1), bad)
            desc.append(f"input {bad}")
        elif what == 3:
            name = rng.choice((*HOSTILE_NAMES[:4], "x\ny.pcapng", "west_eth0\n.pcapng"))
            point = rng.choice(list(seed.points))
            linktype, recs, _ = seed.points[point]
            file = f"hostile{case}.pcapng"
            write_pcapng(folder / file, recs, if_name=name, linktype=linktype)
            inputs.append(file)
            desc.append(f"{point}'s packets under pcapng name {name!r}")
        elif what == 4:
            point = rng.choice(list(seed.points))
            name = rng.choice(("west_eth0\n.pcap", "we\nst_eth0.pcap", "west_eth0 .pcap", f"{point}.pcap.gz",
                               "west_lo.pcap", "nosuch_eth0.pcap", "west-gw_lan0_x.pcap"))
            (folder / name).write_bytes(pcap_from_pcapng(seed.points[point][2]))
            inputs.append(name)
            desc.append(f"{point}'s packets as classic pcap {name!r}")
        else:  # a second copy of one point under another point's name
            a, b = rng.sample(list(seed.points), 2)
            name = form(b, rng) + "-copy.pcapng"
            write_pcapng(folder / name, seed.points[a][1], if_name=b, linktype=seed.points[a][0])
            inputs.append(name)
            desc.append(f"{a}'s packets named {b}")
    if use_file:
        rel = rng.random() < 0.7  # paths relative to the mapping file, or absolute
        body = "".join(f"{_toml_str(p)} = {_toml_str(f if rel else str(folder / f))}\n" for p, f in mapped)
        (folder / "points.toml").write_text(body, encoding="utf-8")
        options += ["--points", str(folder / "points.toml")]
    else:
        options += [x for p, f in mapped for x in ("--point", f"{p}={folder / f}")]
    argv = ["replay", "-t", str(seed.topology), "--json", *options, "--", *(str(folder / f) for f in inputs)]
    return argv, desc, not hostile
