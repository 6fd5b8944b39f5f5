"""Shared fixtures: small generated raw Criteo files (never the real datasets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctr.data.generate import generate_criteo

CRITEO_ROWS = 3000


def write_rows(path: str | Path, lines: list[str]) -> Path:
    """Write raw lines (without newlines) to ``path``, one per line; returns the Path."""
    path = Path(path)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="session")
def criteo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw Criteo-format file of ``CRITEO_ROWS`` generated rows (seed 7), shared by the whole session."""
    return generate_criteo(tmp_path_factory.mktemp("criteo") / "train.txt", CRITEO_ROWS, seed=7)


@pytest.fixture(scope="session")
def criteo_lines(criteo_file: Path) -> list[str]:
    """The lines of ``criteo_file`` (without newlines)."""
    return criteo_file.read_text().splitlines()
