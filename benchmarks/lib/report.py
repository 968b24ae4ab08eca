"""The one JSON line a benchmark prints, flushed at once (a supervising script reads it live)."""

import json


def print_json_line(result: dict) -> None:
    print(json.dumps(result), flush=True)
