"""Everything a run writes: atomic JSON, the per-epoch CSV, checkpoints, progress events.

Only rank 0 writes. Files are replaced atomically (write to a temporary name, then rename), so a
killed run never leaves a half-written ``metrics.json`` or checkpoint behind. The temporary file
is created exclusively and never through a symbolic link (a link planted in a run folder cannot
redirect a write), with the permissions the umask gives (a colleague on a shared filesystem
reads the results); a failed write (a full disk, a read-only folder) leaves no temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable

SCHEMA_VERSION = 1
PROGRESS_PREFIX = "@ablate "
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(path: Path, write: Callable[[BinaryIO], None] | bytes) -> None:
    """Write ``path`` atomically: ``write(f)`` (or the bytes) into a new temporary file beside
    it, flushed to disk, then renamed over it (a link at ``path`` is replaced, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, _NEW, 0o666)  # the umask applies, as for any new file
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode())


def open_log(path: Path) -> BinaryIO:
    """Open a log for appending, never through a symbolic link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666)
    return os.fdopen(fd, "ab")


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def write_log_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole per-epoch log (small), so a resumed run never duplicates rows."""
    if not rows:
        return
    fields = list(rows[0])
    for r in rows[1:]:
        fields += [k for k in r if k not in fields]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def emit(event: str, **fields: Any) -> None:
    """One machine-readable progress line on stdout, read by the study driver's progress bar."""
    sys.stdout.write(PROGRESS_PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()
