"""A progress line on stderr for what takes more than a second (sniffers starting, a large
replay): shown only on a terminal, only once a stage has lasted a second, and erased
before anything else is printed."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

DELAY_S = 1.0


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self._text: str | None = None
        self._since = 0.0
        self._shown = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def stage(self, text: str) -> None:
        """Now doing ``text``; it appears if it is still going on a second from now."""
        if not self.enabled:
            return
        with self._lock:
            self._text, self._since = text, time.monotonic()
            if self._shown:
                self._draw()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tracer-progress", daemon=True)
            self._thread.start()

    def clear(self) -> None:
        """Nothing in progress: erase the line (call before printing to the same terminal)."""
        if not self.enabled:
            return
        with self._lock:
            self._text = None
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = False

    def close(self) -> None:
        self.clear()
        self._wake.set()

    def _run(self) -> None:
        while not self._wake.wait(0.25):
            with self._lock:
                if self._text is not None and time.monotonic() - self._since >= DELAY_S:
                    self._draw()

    def _draw(self) -> None:
        assert self._text is not None
        self.stream.write(f"\r\x1b[K{self._text} … {time.monotonic() - self._since:.0f} s")
        self.stream.flush()
        self._shown = True
