"""Bookkeeping shared by the launchers: what is running (so that an interrupted
``ablate run --parallel`` stops every run, not only the one in the main thread) and turning a
stream of output into lines."""

from __future__ import annotations

import codecs
import itertools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

OnLine = Callable[[str], None]

# Set by cancel_all(): launchers that wait on something they did not start as a child (a SLURM
# job) stop waiting; the job itself keeps running and a later `ablate run` re-attaches to it.
STOP = threading.Event()
_STOPPERS: dict[int, Callable[[], None]] = {}
_LOCK = threading.Lock()
_IDS = itertools.count()


@contextmanager
def tracked(stop: Callable[[], None]) -> Iterator[None]:
    """Register ``stop`` (ends one running launch) for :func:`cancel_all` while the block runs."""
    key = next(_IDS)
    with _LOCK:
        _STOPPERS[key] = stop
    try:
        yield
    finally:
        with _LOCK:
            _STOPPERS.pop(key, None)


def cancel_all() -> None:
    """Stop every launch that is running in this process (Ctrl-C during a parallel study)."""
    STOP.set()
    with _LOCK:
        stoppers = list(_STOPPERS.values())
    for stop in stoppers:
        try:
            stop()
        except Exception:  # noqa: BLE001  (already gone)
            pass


class Lines:
    """Bytes in, complete lines out (``on_line`` gets each with its newline)."""

    def __init__(self, on_line: OnLine | None) -> None:
        self.on_line = on_line
        self.partial = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes | str) -> None:
        text = self.decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        if self.on_line is not None:
            for line in lines:
                self.on_line(line + "\n")

    def close(self) -> None:
        if self.partial and self.on_line is not None:
            self.on_line(self.partial)
        self.partial = ""
