"""A var dir on a size-limited filesystem of its own, which a fault fills to the last byte and frees again.

The limit is a tmpfs mounted for the run (root only); where mounting is not permitted the scenario cannot be
set up, and says why instead of filling the machine's own disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIZE_MIB = 512  # room for a fresh embedded cluster, its WAL and the run's broker files
FILLER = "disk-full.filler"
CHUNK = 1 << 20


class SetupImpossible(RuntimeError):
    """A fault the machine does not let the bench inject; the message is the reason."""


@contextmanager
def limited_filesystem(size_mib: int = SIZE_MIB) -> Iterator[Path]:
    """An empty directory on a tmpfs of ``size_mib`` MiB, unmounted afterwards."""
    mount_point = Path(tempfile.mkdtemp(prefix="keymeta-faults-disk-"))
    try:
        if os.geteuid() != 0:
            raise SetupImpossible("mounting a size-limited filesystem needs root; this bench runs as uid "
                                  f"{os.geteuid()}")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs",
                                  str(mount_point)], capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            raise SetupImpossible(f"mount -t tmpfs failed: {mounted.stderr.strip() or mounted.returncode}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", "--lazy", str(mount_point)], capture_output=True, check=False)
    finally:
        with contextlib.suppress(OSError):
            mount_point.rmdir()


def fill(root: Path) -> int:
    """Write zeros under ``root`` until its filesystem has no byte left; the bytes written."""
    written = 0
    zeros = bytes(CHUNK)
    with (root / FILLER).open("wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(zeros) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    # Smaller and smaller writes take the last partial chunk too.
    size = CHUNK // 2
    with (root / FILLER).open("ab", buffering=0) as filler:
        while size >= 1:
            try:
                written += filler.write(bytes(size)) or 0
            except OSError:
                size //= 2
    return written


def free(root: Path) -> None:
    (root / FILLER).unlink(missing_ok=True)
