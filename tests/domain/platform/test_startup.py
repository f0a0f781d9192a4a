"""A process that cannot start says why in one ``error:`` line and exits 1: bad settings or no database."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import BIN

BAD_URL = "sqlite:///keymeta.db"


def start(command: list[str], var_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KEYMETA_")}
    environment.update({"KEYMETA_VAR_DIR": str(var_dir), "KEYMETA_LOG_FORMAT": "json", **env})
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


API = [str(BIN / "uvicorn"), "--factory", "api.app:create_app", "--host", "127.0.0.1", "--port", "0"]
WORKER = [str(BIN / "celery"), "-A", "workers.app", "worker", "-Q", "audit", "--without-mingle",
          "--without-gossip", "--pool", "solo"]


@pytest.mark.parametrize("command", [API, WORKER], ids=["api", "worker"])
def test_a_database_url_that_is_not_postgresql_stops_the_start(tmp_path: Path, command: list[str]) -> None:
    done = start(command, tmp_path / "var", KEYMETA_DATABASE_URL=BAD_URL)
    assert done.returncode == 1, done.stderr
    [line] = error_lines(done)
    assert "KEYMETA_DATABASE_URL must be a PostgreSQL URL" in line and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [API, WORKER], ids=["api", "worker"])
def test_an_embedded_server_that_cannot_start_stops_the_start(tmp_path: Path, command: list[str]) -> None:
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "postgres").write_text("not a data directory")
    done = start(command, var_dir)
    assert done.returncode == 1, done.stderr
    [line] = error_lines(done)
    assert str(var_dir / "postgres") in line and "KEYMETA_VAR_DIR" in line and "Traceback" not in done.stderr
    assert (var_dir / "postgres").read_text() == "not a data directory"
