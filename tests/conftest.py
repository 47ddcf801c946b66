"""Shared fixtures: generated media (never committed) and the corpus location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(os.environ.get("LIPDUB_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))


def corpus_dir() -> Path:
    if not (CORPUS / "manifest.csv").is_file():
        pytest.skip(f"real-clip corpus not found at {CORPUS} (set LIPDUB_CORPUS to run these tests)")
    return CORPUS


@pytest.fixture(scope="session")
def corpus() -> Path:
    return corpus_dir()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def demo_inputs(media_dir: Path) -> tuple[Path, Path]:
    """A 4-s synthetic talking-head clip and ~9 s of espeak-ng speech."""
    from lipdub.demo import make_demo_inputs

    return make_demo_inputs(media_dir / "demo", seconds=4.0)


@pytest.fixture
def settings(tmp_path: Path):
    from lipdub.config import Settings

    return Settings(data_dir=tmp_path / "var")
