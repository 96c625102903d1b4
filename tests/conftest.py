"""Shared test fixtures. ``shared_dir`` is the development workspace's ../shared (real M2E2 files, peer
predictions); users outside it have none, so tests that need it skip with the reason."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "data" / "m2e2" / "text_only_event.json").exists():
        pytest.skip(f"{SHARED} not found: the real M2E2 annotations and peer files exist only in the dev workspace")
    return SHARED
