"""Shared fixtures: paths to the shipped example and the reference data beside the checkout."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared" / "reference" / "example"


@pytest.fixture
def reference_dir() -> Path:
    if not SHARED_REFERENCE.is_dir():
        pytest.skip("../shared/reference/example is absent")
    return SHARED_REFERENCE
