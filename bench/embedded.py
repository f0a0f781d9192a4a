"""The embedded backend's PostgreSQL server belongs to one run: started under its own var dir, stopped when it ends.

With ``KEYMETA_DATABASE_URL`` unset, keymeta starts the server under ``$KEYMETA_VAR_DIR/postgres`` on demand
(``domain.platform.embedded_postgres``), in whichever process needs it first. :func:`embedded_server` starts
and migrates it, and stops it on every way out of its block: an error, Ctrl-C, and SIGTERM once
:func:`exit_on_sigterm` is installed. :func:`leftover_var_dirs` finds the servers of a part that was killed
before it could stop its own.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from domain.platform import embedded_postgres
from domain.platform.database import make_sync_engine
from domain.platform.migrate import upgrade_to_head
from domain.platform.settings import Settings

INTERRUPTED = 130  # the exit status of a part stopped by Ctrl-C, after it stopped what it started
INTERRUPTED_MESSAGE = "interrupted; every process this run started has been stopped"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def start(var_dir: Path) -> None:
    """Start the server of ``var_dir`` (if it is not running) and migrate its schema to head."""
    var_dir.mkdir(parents=True, exist_ok=True)
    engine = make_sync_engine(Settings(_env_file=None, database_url="", var_dir=var_dir))  # the embedded server
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()


def stop(var_dir: Path) -> bool:
    """Stop the server of ``var_dir``; a failure is reported, never raised (this runs while unwinding)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
    try:
        embedded_postgres.stop(var_dir)
        return True
    except (embedded_postgres.EmbeddedPostgresError, OSError) as exc:
        say(f"could not stop the embedded PostgreSQL server under {var_dir}: {exc}")
        return False
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def embedded_server(var_dir: Path) -> Iterator[None]:
    """A started, migrated server under ``var_dir`` for the block; stopped afterwards, however the block ends."""
    try:
        start(var_dir)
        yield
    finally:
        stop(var_dir)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C does (``finally`` blocks run), so a terminated bench still stops its servers."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def leftover_var_dirs(root: Path) -> list[Path]:
    """Var dirs under ``root`` whose embedded server left its ``postmaster.pid`` behind (it may still run)."""
    found: set[Path] = set()
    for pid_file in root.glob("**/postmaster.pid"):
        for parent in pid_file.parents:
            if parent == root:
                break
            if embedded_postgres.Paths.of(parent.parent).data_dir == parent:
                found.add(parent.parent)
                break
    return sorted(found)
