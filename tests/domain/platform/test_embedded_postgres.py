"""The embedded default is a real PostgreSQL server: started on demand, once however many start it, stopped
cleanly, never as root, and every failure one line that names the cause and the fix."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pwd
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from domain.platform import embedded_postgres
from domain.platform.database import make_async_engine, make_sync_engine
from domain.platform.embedded_postgres import EmbeddedPostgresError, cause_line, ensure_running, running_pid, stop
from domain.platform.settings import Settings
from tests import backends
from tests.processes import wait_until

REPO = Path(__file__).resolve().parents[3]


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """Every postgres process (postmaster or child) whose command line names ``data_dir``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.fixture
def var_dir(tmp_path: Path) -> Iterator[Path]:
    """A var dir of the test's own; whatever server it started is stopped, and none of its processes is left."""
    var = tmp_path / "var"
    yield var
    if var.is_dir():
        stop(var)
    data_dir = embedded_postgres.Paths.of(var).data_dir
    assert postmasters(data_dir) == []


def embedded_settings(var_dir: Path) -> Settings:
    return Settings(_env_file=None, var_dir=var_dir, database_url="")  # type: ignore[call-arg]


def one_line(exc: pytest.ExceptionInfo[EmbeddedPostgresError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def test_starts_on_first_use_and_serves_psycopg_and_asyncpg(var_dir: Path) -> None:
    url = ensure_running(var_dir)
    socket_dir = embedded_postgres.Paths.of(var_dir).run_dir
    assert url == f"postgresql://postgres@/keymeta?host={socket_dir}"

    settings = embedded_settings(var_dir)
    engine = make_sync_engine(settings)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_database(), current_setting('server_encoding')")).one() == (
            "keymeta", "UTF8")
        assert conn.execute(text("SELECT current_setting('listen_addresses')")).scalar() == ""
    engine.dispose()

    async def query() -> str:
        async_engine = make_async_engine(settings)
        try:
            async with async_engine.connect() as conn:
                return str((await conn.execute(text("SELECT current_database()"))).scalar())
        finally:
            await async_engine.dispose()

    assert asyncio.run(query()) == "keymeta"


def test_the_server_never_runs_as_root(var_dir: Path) -> None:
    ensure_running(var_dir)
    owners = {process.username() for process in postmasters(embedded_postgres.Paths.of(var_dir).data_dir)}
    assert owners and "root" not in owners
    if os.geteuid() == 0:
        assert owners == {embedded_postgres.SERVICE_ACCOUNT}


def test_a_second_call_reuses_the_running_server(var_dir: Path) -> None:
    first = ensure_running(var_dir)
    pid = running_pid(var_dir)
    assert pid is not None
    assert ensure_running(var_dir) == first
    assert running_pid(var_dir) == pid


def test_processes_starting_at_once_get_one_server(var_dir: Path) -> None:
    script = ("import sys; from pathlib import Path; from domain.platform import embedded_postgres as e; "
              "url = e.ensure_running(Path(sys.argv[1])); print(url, e.running_pid(Path(sys.argv[1])))")
    starters = [subprocess.Popen([sys.executable, "-c", script, str(var_dir)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [starter.communicate(timeout=120) for starter in starters]
    assert all(starter.returncode == 0 for starter in starters), [err for _, err in results]
    assert len({out.splitlines()[-1] for out, _ in results}) == 1, results  # stdout may hold log lines first
    data_dir = embedded_postgres.Paths.of(var_dir).data_dir
    assert len([p for p in postmasters(data_dir) if p.ppid() not in {q.pid for q in postmasters(data_dir)}]) == 1


def test_stop_stops_it_and_the_data_survives_a_restart(var_dir: Path) -> None:
    engine = make_sync_engine(embedded_settings(var_dir))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (value text)"))
        conn.execute(text("INSERT INTO kept VALUES ('still here')"))
    engine.dispose()
    data_dir = embedded_postgres.Paths.of(var_dir).data_dir

    assert stop(var_dir) is True
    assert postmasters(data_dir) == []
    assert running_pid(var_dir) is None
    assert stop(var_dir) is False  # nothing to stop is not an error

    engine = make_sync_engine(embedded_settings(var_dir))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM kept")).scalar() == "still here"
    engine.dispose()


def test_stop_of_a_var_dir_without_a_server_is_a_no_op(tmp_path: Path) -> None:
    assert stop(tmp_path / "never-used") is False
    assert not (tmp_path / "never-used").exists()


@pytest.mark.parametrize("holder", ["dead process", "live process that is not postgres"])
def test_a_stale_postmaster_pid_does_not_block_the_start(var_dir: Path, holder: str) -> None:
    ensure_running(var_dir)
    first_pid = running_pid(var_dir)
    stop(var_dir)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if holder == "dead process":
            other.kill()
            other.wait()
        pid_file = embedded_postgres.Paths.of(var_dir).data_dir / "postmaster.pid"
        pid_file.write_text(f"{other.pid}\n{embedded_postgres.Paths.of(var_dir).data_dir}\n1700000000\n5432\n"
                            f"{embedded_postgres.Paths.of(var_dir).run_dir}\n\n  5432001     32768\nready   \n")
        assert running_pid(var_dir) is None
        ensure_running(var_dir)
        assert running_pid(var_dir) not in (None, first_pid, other.pid)
    finally:
        other.kill()
        other.wait()


def test_a_socket_path_too_long_for_af_unix_falls_back_to_a_short_temp_dir(tmp_path: Path) -> None:
    var = tmp_path / ("long-" * 16) / "var"
    assert len(os.fsencode(var / "run" / embedded_postgres.SOCKET_NAME)) > embedded_postgres.SOCKET_PATH_MAX
    try:
        url = ensure_running(var)
        socket_dir = embedded_postgres.Paths.of(var).socket_dir()
        assert url.endswith(f"?host={socket_dir}") and socket_dir != embedded_postgres.Paths.of(var).run_dir
        engine = make_sync_engine(embedded_settings(var))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
    finally:
        stop(var)
    assert postmasters(embedded_postgres.Paths.of(var).data_dir) == []


def test_a_var_path_that_is_not_a_writable_directory_fails_in_one_line(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.write_text("not a directory")  # stops root too, where chmod would not
    with pytest.raises(EmbeddedPostgresError) as exc:
        ensure_running(var)
    message = one_line(exc)
    assert str(var) in message and "KEYMETA_VAR_DIR" in message and "log:" in message
    assert var.read_text() == "not a directory"


def test_a_data_dir_that_holds_no_cluster_is_never_overwritten(var_dir: Path) -> None:
    data_dir = embedded_postgres.Paths.of(var_dir).data_dir
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddedPostgresError) as exc:
        ensure_running(var_dir)
    assert "PG_VERSION" in one_line(exc) and str(data_dir) in str(exc.value)
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]
    assert (data_dir / "notes.txt").read_text() == "mine"


def test_a_missing_wheel_fails_in_one_line_naming_the_fix(var_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_postgres, "bin_dir", lambda: var_dir.parent / "no-such-wheel" / "bin")
    with pytest.raises(EmbeddedPostgresError) as exc:
        ensure_running(var_dir)
    assert "make install" in one_line(exc)


def test_a_server_that_cannot_start_fails_in_one_line_with_the_log(var_dir: Path) -> None:
    ensure_running(var_dir)
    stop(var_dir)
    paths = embedded_postgres.Paths.of(var_dir)
    conf = paths.data_dir / "postgresql.auto.conf"
    original = conf.read_text()
    conf.write_text(original + "shared_buffers = 'not a size'\n")
    try:
        with pytest.raises(EmbeddedPostgresError) as exc:
            ensure_running(var_dir)
        message = one_line(exc)
        assert "did not start" in message and f"(log: {paths.log_path})" in message
        assert running_pid(var_dir) is None
    finally:
        conf.write_text(original)
    ensure_running(var_dir)  # the data is intact once the cause is fixed


def test_only_the_servers_account_and_root_can_reach_its_socket(var_dir: Path) -> None:
    url = ensure_running(var_dir)
    paths = embedded_postgres.Paths.of(var_dir)
    socket_dir = paths.socket_dir()
    server_uid = paths.data_dir.stat().st_uid
    directory, socket = socket_dir.lstat(), (socket_dir / embedded_postgres.SOCKET_NAME).lstat()
    assert (stat.S_IMODE(directory.st_mode), directory.st_uid) == (0o700, server_uid)
    assert stat.S_ISSOCK(socket.st_mode) and stat.S_IMODE(socket.st_mode) == 0o700
    engine = make_sync_engine(embedded_settings(var_dir))  # the caller (root or the server's owner) connects
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert url.endswith(f"?host={socket_dir}")
    if os.geteuid() != 0:
        assert os.environ.get("CI") != "true", "CI runs as root: the other-user half must run there"
        return
    nobody = pwd.getpwnam("nobody")
    attempt = subprocess.run(
        [str(embedded_postgres.binary("psql")), "--no-psqlrc", "-h", str(socket_dir), "-p", str(embedded_postgres.PORT),
         "-U", embedded_postgres.SUPERUSER, "-d", embedded_postgres.DATABASE, "-Atc", "SELECT 1"],
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/", env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=False)
    assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, (attempt.stdout, attempt.stderr)


def test_a_dropped_database_is_created_again_by_the_next_caller(var_dir: Path) -> None:
    import psycopg

    ensure_running(var_dir)
    socket_dir = embedded_postgres.Paths.of(var_dir).socket_dir()
    connect = {"host": str(socket_dir), "port": embedded_postgres.PORT, "user": embedded_postgres.SUPERUSER,
               "dbname": "postgres", "autocommit": True}
    with psycopg.connect(**connect) as conn:
        conn.execute(f'DROP DATABASE "{embedded_postgres.DATABASE}" WITH (FORCE)')
    pid = running_pid(var_dir)
    ensure_running(var_dir)
    assert running_pid(var_dir) == pid  # the running server, not a restart
    with psycopg.connect(**connect) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (embedded_postgres.DATABASE,)).fetchone() == (1,)


def test_stop_waits_for_a_start_in_progress(var_dir: Path) -> None:
    paths = embedded_postgres.Paths.of(var_dir)
    var_dir.mkdir(parents=True)
    paths.init_dir.mkdir()  # initdb at work: no data dir yet
    holder = os.open(paths.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # the starter holds the lock
    results: list[bool] = []
    stopper = threading.Thread(target=lambda: results.append(stop(var_dir)))
    try:
        stopper.start()
        inode = os.fstat(holder).st_ino
        wait_until(lambda: any("->" in line and line.split()[-3].endswith(f":{inode}")  # a blocked flock request
                               for line in Path("/proc/locks").read_text().splitlines()),
                   timeout=30, message="stop() to wait on the start lock")
        assert stopper.is_alive() and results == []
    finally:
        os.close(holder)
        stopper.join(timeout=30)
    assert results == [False]


def test_a_socket_held_by_another_postgresql_server_fails_in_one_line(
        var_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = embedded_postgres.Paths.of(var_dir).run_dir
    monkeypatch.setattr(embedded_postgres.Paths, "socket_dir", lambda self: shared)
    other_var = tmp_path / "other-var"
    try:
        ensure_running(other_var)
        other_pid = running_pid(other_var)
        with pytest.raises(EmbeddedPostgresError) as exc:
            ensure_running(var_dir)
        message = one_line(exc)
        assert f"in use by another PostgreSQL server (pid {other_pid})" in message and "log:" in message
        assert running_pid(var_dir) is None and running_pid(other_var) == other_pid
    finally:
        stop(other_var)
    assert postmasters(embedded_postgres.Paths.of(other_var).data_dir) == []


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_loosened_permissions_outside_the_var_dir_are_named_in_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(embedded_postgres, "log", recorder)
    install = tmp_path / "site-packages" / "pginstall"
    (install / "bin").mkdir(parents=True)
    (install / "lib").mkdir()
    (install / "bin" / "postgres").write_text("")
    (install / "bin" / "postgres").chmod(0o700)
    (install / "lib").chmod(0o700)
    (tmp_path / "private").mkdir(mode=0o700)
    var = tmp_path / "private" / "var"
    var.mkdir(mode=0o755)
    account = embedded_postgres.Account("keymeta-postgres", 1, 1)

    embedded_postgres._grant_service_access(account, install, var)
    assert len(recorder.lines) == 1
    event, fields = recorder.lines[0]
    assert event == "embedded_postgres.permissions_loosened" and fields["account"] == "keymeta-postgres"
    assert {str(tmp_path / "private"), str(install / "bin"), str(install / "lib")} <= set(fields["directories"])
    assert str(var) not in fields["directories"]  # its mode already allowed it
    assert stat.S_IMODE((install / "bin" / "postgres").stat().st_mode) == 0o705

    embedded_postgres._grant_service_access(account, install, var)
    assert len(recorder.lines) == 1  # nothing changed: nothing to say


def nologin(shell: str) -> bool:
    return shell.endswith("/nologin") or shell == "/bin/false"


def uid_min() -> int:
    try:
        lines = Path("/etc/login.defs").read_text().splitlines()
    except OSError:
        return 1000
    values = [line.split()[1] for line in lines if line.split()[:1] == ["UID_MIN"] and len(line.split()) > 1]
    return int(values[0]) if values else 1000


@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="creating a system user needs root")
@pytest.mark.parametrize("name", [f"kmpg-test-{uuid.uuid4().hex[:8]}"])
def test_the_service_account_is_created_as_a_system_user_without_login(name: str) -> None:
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    try:
        account = embedded_postgres._service_account(name)
        entry = pwd.getpwnam(name)
        assert (account.uid, account.gid) == (entry.pw_uid, entry.pw_gid)
        assert 0 < entry.pw_uid < uid_min(), entry
        assert nologin(entry.pw_shell), entry
        assert not Path(entry.pw_dir).exists()
        assert embedded_postgres._service_account(name) == account  # an existing account is used as it is
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


@pytest.mark.parametrize(("output", "cause"), [
    ('psql:<stdin>:12: ERROR:  relation "x" does not exist\nLINE 1: SELECT * FROM x',
     'ERROR:  relation "x" does not exist'),
    ("pg_restore: error: could not read from input file: end of file\n", "could not read from input file: end of file"),
    ('relation "x" does not exist\nLINE 1: SELECT 1\n', 'relation "x" does not exist'),
    ("The files belonging to this database system\ninitdb: error: could not create directory \"/x\": No space left",
     'could not create directory "/x": No space left'),
    ("", ""),
])
def test_the_cause_of_a_failure_is_its_first_error_line(output: str, cause: str) -> None:
    assert cause_line(output) == cause


def test_admin_url_holds_no_lock_when_the_server_does_not_start(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(var_dir: Path) -> str:
        raise EmbeddedPostgresError("cannot start")

    monkeypatch.setattr(backends, "POSTGRES_URL", "")
    monkeypatch.setattr(backends, "TEST_VAR_DIR", tmp_path)
    monkeypatch.setattr(backends, "_USERS_LOCK", tmp_path / "sessions.lock")
    monkeypatch.setattr(backends, "_users_fd", None)
    monkeypatch.setattr(embedded_postgres, "ensure_running", refuse)
    with pytest.raises(EmbeddedPostgresError):
        backends.admin_url.__wrapped__()
    assert backends._users_fd is None
    fd = os.open(tmp_path / "sessions.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a stopping session is not kept waiting
    finally:
        os.close(fd)


@pytest.mark.parametrize("url", ["sqlite:///var/keymeta.db", "mysql://root@localhost/keymeta", "keymeta.db"])
def test_a_database_url_that_is_not_postgresql_is_refused_when_settings_load(url: str) -> None:
    with pytest.raises(ValidationError, match="must be a PostgreSQL URL"):
        Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["postgresql://u@db/keymeta", "postgres://u@db/keymeta",
                                 "postgresql+psycopg://u@db/keymeta", "postgresql+asyncpg://u@db/keymeta"])
def test_postgresql_urls_are_accepted(url: str) -> None:
    assert Settings(_env_file=None, database_url=url).database_url == url  # type: ignore[call-arg]
