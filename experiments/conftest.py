"""The experiment scripts' tests: the repository root and experiments/ on the path, and the same
``shared_dir`` fixture as the product's tests (tests/conftest.py: one definition of where ../shared is)."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from tests.conftest import shared_dir  # noqa: E402,F401
