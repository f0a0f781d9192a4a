"""Run ``keymeta`` in-process and hold it to the CLI's conventions: JSON on stdout, one ``error:`` line."""

from __future__ import annotations

import json
import re
from typing import Any

from click.testing import CliRunner, Result

from cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


def fails(*args: str, match: str) -> str:
    """Non-zero exit, nothing on stdout, exactly one line ``error: ...`` on stderr."""
    result = run(*args)
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(match, lines[0]), lines[0]
    return lines[0]
