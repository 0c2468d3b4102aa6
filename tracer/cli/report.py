"""``tracer report``: a problem-report bundle of a run directory, like ``ipsec barf``, without secrets."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tomllib
from pathlib import Path

from tracer.errors import EXIT_DELIVERED, BadInput, TracerError
from tracer.run.report import (
    LOG_TAIL,
    Bundle,
    LabInfo,
    ReplayResult,
    build_bundle,
    check_output,
    run_dir_or_fail,
    save,
    write_archive,
)

STDOUT = "-"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="bundle a run for a problem report (verdict, captures, state, logs; secrets removed)",
        description="Write a .tar.gz a stranger can diagnose the run from, like 'ipsec barf': SUMMARY.txt "
        "first (the verdict as 'tracer replay' prints it, evidence and check results, IPsec daemon state, "
        "tool versions, what was redacted, an index), then the verdict as text and JSON, and the run "
        "directory itself (topology, manifest, probes, every capture, per-node addresses/routes/rules in "
        "netstate/, evidence/). For a run on the built-in lab that is still there, also 'tracer lab status "
        "--json' (SAs as swanctl --list-sas shows them) and each gateway's charon.log.\n\n"
        "Secrets stay out: pre-shared keys, passwords, ESP keys, hex keys and private key blocks in any "
        "text become REDACTED; charon's key log, esp_sa files, SSH identities and the key files the "
        "topology names are never copied. SUMMARY.txt says what was redacted or left out. The bundle is "
        "written owner-only (0600), atomically, and never over an existing file without --force.",
        epilog="examples:\n"
        "  tracer report captures/esp-blocked -o esp-blocked.tar.gz\n"
        "  tracer ping west east --out run1 ; tracer report run1 -o run1.tar.gz\n"
        "  tracer report run1 -o run1.tar.gz --force --json | jq .redactions\n"
        "  tracer report run1 -o - | tar tzf -          # the bundle on stdout\n"
        "  tar xzf run1.tar.gz && tracer replay tracer-report-run1/run\n"
        "exit status: 0 when the bundle was written, whatever the verdict (it is in SUMMARY.txt)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (tracer ping/ike/mtu --out DIR)")
    p.add_argument("--output", "-o", required=True, metavar="FILE.tar.gz|-",
                   help="the bundle to write; '-' writes it to stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--json", action="store_true",
                   help="print what was written as JSON (path, files, redactions, files left out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    to_stdout = args.output == STDOUT
    if to_stdout and args.json:
        raise BadInput("--json needs -o FILE: with -o - stdout carries the bundle")
    out = None if to_stdout else Path(args.output)
    if out is not None:
        check_output(out, args.force)  # before the replay: a refusal costs nothing
    bundle = make_bundle(args.run_dir)
    if out is None:
        buf = io.BytesIO()  # whole, then written: a failure leaves no half archive on stdout
        write_archive(bundle, buf)
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        print(_said(bundle, "stdout"), file=sys.stderr)
        return EXIT_DELIVERED
    save(bundle, out, args.force)
    if args.json:
        from tracer.jsondoc import document, dumps

        print(dumps(document("report", bundle.replay.runs, EXIT_DELIVERED, report=bundle.to_dict(str(out)))))
    else:
        print(_said(bundle, str(out)))
    return EXIT_DELIVERED


def _said(bundle: Bundle, where: str) -> str:
    n = sum(r.count for r in bundle.redactions)
    left = f", {len(bundle.left_out)} left out" if bundle.left_out else ""
    return f"wrote {where}: {len(bundle.members)} files, {n} secrets redacted{left} (see {bundle.folder}/SUMMARY.txt)"


def make_bundle(run_dir: Path) -> Bundle:
    """Replay the run, look for its lab, assemble the bundle (nothing written)."""
    run_dir_or_fail(run_dir)
    return build_bundle(run_dir, replay_of(run_dir), lab_of(run_dir))


def replay_of(run_dir: Path) -> ReplayResult:
    """What ``tracer replay RUN_DIR`` prints (and with ``--json``); a replay that fails is itself
    the finding, so its one-line error takes the verdict's place."""
    from tracer.cli.render import render_text
    from tracer.jsondoc import document, dumps, error_document
    from tracer.run.replay import load_run, replay_run

    try:
        verdicts = replay_run(load_run([run_dir]))
    except TracerError as e:
        msg = f"tracer: {e}"
        return ReplayResult(msg + "\n", dumps(error_document("replay", str(e), e.exit_code)) + "\n", e.exit_code)
    runs = [v.to_dict() for v in verdicts]
    code = max((v.exit_code for v in verdicts), default=EXIT_DELIVERED)
    return ReplayResult(
        "\n\n".join(render_text(v) for v in verdicts) + "\n",
        dumps(document("replay", runs, code)) + "\n",
        code,
        verdicts[0].status.value if verdicts else None,
        verdicts[0].summary if verdicts else None,
        runs,
    )


def lab_name_of(run_dir: Path) -> str | None:
    """The built-in lab the run's topology describes (its name, every node in that lab's namespace)."""
    from tracer.lab import layout

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        doc = tomllib.loads((run_dir / str(manifest.get("topology") or "topology.toml")).read_text())
    except (OSError, ValueError, AttributeError):
        return None
    name, nodes = doc.get("name"), doc.get("nodes")
    if not isinstance(name, str) or not layout.LAB_NAME_RE.match(name) or not isinstance(nodes, dict) or not nodes:
        return None
    ours = all(node in layout.NODES and isinstance(raw, dict) and raw.get("netns") == layout.netns_name(name, node)
               for node, raw in nodes.items())
    return name if ours else None


def lab_of(run_dir: Path) -> LabInfo | None:
    """The lab's state now: ``tracer lab status --json`` and each gateway's charon log (never keys.log)."""
    name = lab_name_of(run_dir)
    if name is None:
        return None
    from tracer.lab import GATEWAYS, Lab
    from tracer.lab.strongswan import LOG, OUT

    lab = Lab(name)
    if not lab.dir.is_dir():
        return LabInfo(name, False, None, notes=[f"lab '{name}' is not there now ({lab.dir} missing): "
                                                 "no daemon status or charon log"])
    info = LabInfo(name, False, None)
    try:
        info.status = lab.status()
        info.up = bool(info.status.get("up"))
    except TracerError as e:
        info.notes.append(f"daemon status not read: {e}")
    for gw in GATEWAYS:
        for log in (LOG, OUT):
            path = lab.gateway_dir(gw) / log
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size - LOG_TAIL))
                    data = f.read(LOG_TAIL)
            except FileNotFoundError:
                continue
            except OSError as e:
                info.notes.append(f"{path}: not read ({e.strerror})")
                continue
            text = data.decode("utf-8", errors="replace")
            if size > LOG_TAIL:
                text = f"[first {size - LOG_TAIL} bytes left out]\n" + text.split("\n", 1)[-1]
            info.logs[f"{gw}/{log}"] = text
    return info
