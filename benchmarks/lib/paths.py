"""Where the scripts find the checkout, its example videos and the ``streamo`` command."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VIDEOS = REPO / "dataset" / "example" / "videos"
STREAMO = [sys.executable, "-m", "streamo.cli"]
"""The ``streamo`` command of the Python that runs the benchmark."""
