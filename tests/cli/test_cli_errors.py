"""The operator CLI (docs/operations.md): every failure is one line and a non-zero exit, usage mistakes included."""

from __future__ import annotations

import subprocess

import pytest

from tests.processes import BIN


@pytest.mark.parametrize("args", [
    ["license-keys", "create", "--product", "1", "--status", "bogus"],
    ["api-keys", "deactivate", "not-a-number"],
    ["no-such-command"],
    ["products", "create"],  # missing --name
])
def test_usage_errors_are_one_line_and_non_zero(args: list[str], settings) -> None:
    result = subprocess.run([str(BIN / "keymeta"), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
