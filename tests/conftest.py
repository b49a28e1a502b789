"""Shared fixtures: where the real datasets are, and how a missing dataset is reported.

The real images live outside the repository (``MONAI_DANIL_DATA``, default ``../shared/data``).
Locally a test that needs them is skipped when they are absent; in CI (``CI=true``) it fails,
so a misconfigured CI can never pass by skipping everything that matters.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    return Path(os.environ.get("MONAI_DANIL_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"real data not found at {path} (set MONAI_DANIL_DATA to the shared data folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding ``skin/``, ``retina/``, ``pathology/`` and ``formats/``."""
    return _require(_data_root())


@pytest.fixture(scope="session")
def retina_dir(data_root: Path) -> Path:
    return _require(data_root / "retina")


@pytest.fixture(scope="session")
def skin_dir(data_root: Path) -> Path:
    return _require(data_root / "skin")


@pytest.fixture(scope="session")
def pathology_dir(data_root: Path) -> Path:
    return _require(data_root / "pathology")


@pytest.fixture(scope="session")
def formats_dir(data_root: Path) -> Path:
    return _require(data_root / "formats")
