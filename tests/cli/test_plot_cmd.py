"""``tracer plot``, the real command line: it writes a PNG (exit 0 whatever the verdict), and
refuses a figure name it cannot write with one line and exit 2, before replaying anything."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.cli.tracer_cmd import CAPTURES, assert_bad_input, tracer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "esp-blocked.png"
    r = tracer("plot", CAPTURES / "esp-blocked", "-o", out)
    assert (r.code, r.err, r.out) == (0, "", f"wrote {out}\n"), r  # a loss verdict, still exit 0
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    # The first chunk is IHDR: a real image, wider than tall is not promised, but not empty.
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (length, kind) == (13, b"IHDR") and width >= 400 and height >= 300, (width, height)
    assert data[-12:] == struct.pack(">I", 0) + b"IEND" + struct.pack(">I", 0xAE426082)


def test_plot_refuses_a_bad_extension(tmp_path: Path) -> None:
    out = tmp_path / "figure.jpg"
    assert_bad_input(tracer("plot", CAPTURES / "esp-blocked", "-o", out),
                     f"tracer: {out}: cannot write '.jpg' figures; use a .png or .svg file name")
    assert not out.exists()


def test_plot_refuses_a_missing_directory(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "figure.png"
    assert_bad_input(tracer("plot", CAPTURES / "esp-blocked", "-o", out),
                     f"tracer: {out}: directory {out.parent} does not exist")


def test_plot_needs_an_output() -> None:
    assert_bad_input(tracer("plot", CAPTURES / "esp-blocked"),
                     "tracer: --output FILE.png|FILE.svg is required (except for a 'tracer watch' directory)")
