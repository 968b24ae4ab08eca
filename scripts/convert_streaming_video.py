#!/usr/bin/env python
"""Raw annotations -> stream conversations (same as `streamo convert|validate|stats`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamo.cli import DATA_COMMANDS, main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="convert_streaming_video.py", commands=DATA_COMMANDS))
