"""The GPU recipe's ``MODEL`` as a local directory before ``swift sft`` starts (``train.sh``).

ms-swift would download a hub id itself, deep inside the trainer, and a hub it cannot reach
ends the run in a traceback of a hundred lines. Fetching it first, with ms-swift's own
downloader (``safe_snapshot_download``: ModelScope by default, the Hugging Face hub with
``USE_HF=1``, a local directory as it is), makes that failure one line that says what to do.

``python -m streamo.swift_plugin.fetch MODEL`` prints the directory on stdout (progress and
ms-swift's log go to stderr); exit status 2 and one line on stderr, after the hub client's
own retry warnings, when it cannot be had.
"""

from __future__ import annotations

import sys


def fetch(model: str) -> str:
    """``model`` (a hub id or a local directory) as a local directory, downloaded when needed."""
    from swift.utils import safe_snapshot_download

    return safe_snapshot_download(model)


def main(argv: list[str] | None = None) -> int:
    (model,) = sys.argv[1:] if argv is None else argv
    from swift.utils.env import use_hf_hub

    hub, other = (("the Hugging Face hub", "ModelScope with USE_HF=0") if use_hf_hub()
                  else ("ModelScope", "the Hugging Face hub with USE_HF=1"))
    try:
        directory = fetch(model)
    except Exception as exc:  # whatever the hub client raises (network, missing repo, access), the download failed
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 240:
            reason = reason[:240] + "…"
        print(f"train.sh: cannot get MODEL={model} from {hub}: {reason}; point MODEL at a local "
              f"directory of the weights, or try {other}", file=sys.stderr)
        return 2
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
