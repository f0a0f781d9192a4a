"""The documentation stays honest: its links lead somewhere, and its settings exist.

Every relative link in README.md and docs/*.md points at a file of the repository, and every ``KEYMETA_*``
name in docs/operations.md is a field of :class:`domain.platform.settings.Settings`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain.platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SETTING = re.compile(r"\bKEYMETA_[A-Z0-9_]*[A-Z0-9]\b")


def relative_links(text: str) -> list[str]:
    """Link targets that are paths in the repository (no scheme, not a bare #anchor), without their anchor."""
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [target.split("#", 1)[0] for target in targets
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")]


def test_the_docs_exist() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "api.md", "events.md", "signing-keys.md", "operations.md", "architecture.md",
            "benchmarks.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_points_at_a_file(page: Path) -> None:
    broken = [target for target in relative_links(page.read_text(encoding="utf-8"))
              if not (page.parent / target).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_every_setting_in_operations_is_a_settings_field() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    fields = {f"KEYMETA_{name.upper()}" for name in Settings.model_fields}
    mentioned = set(SETTING.findall(text))
    assert mentioned, "docs/operations.md names no setting"
    assert not mentioned - fields, f"docs/operations.md names unknown settings: {sorted(mentioned - fields)}"


def test_link_parsing_keeps_paths_and_drops_urls_and_anchors() -> None:
    text = "[a](docs/api.md#checks) [b](https://example.com/x.md) [c](#local) [d](../Procfile)"
    assert relative_links(text) == ["docs/api.md", "../Procfile"]
