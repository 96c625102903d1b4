"""Shared test fixtures. ``shared_dir`` is the development workspace's ../shared (real M2E2 files, peer
predictions); users outside it have none, so tests that need it skip with the reason."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
# a toy world small enough to train a few steps on in a test, and large enough for every task
TINY = dict(ace_train=24, ace_dev=8, ace_test=8, swig_train=16, swig_dev=6, swig_test=6, mnre_train=12, mnre_dev=4,
            mnre_test=4, m2e2_dev=2, m2e2_test=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The TINY world, one per test module (tests may damage its files)."""
    import toy
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **TINY)


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data" / "m2e2" / "text_only_event.json").exists():
        pytest.skip(f"{SHARED} not found: the real M2E2 annotations and peer files exist only in the dev workspace")
    return SHARED
