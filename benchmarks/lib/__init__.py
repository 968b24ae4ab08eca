"""What the benchmark scripts share: the checkout's paths, process measurements, the JSON line
each script prints, the models and clips they build.

How the scripts import: each runs as ``python benchmarks/NAME.py``, and Python puts a script's
folder first on ``sys.path``; so ``benchmarks/`` is the import root of its scripts. A script
imports this package as ``lib`` (``from lib.system import peak_rss_mb``) and a sibling script
as a top-level module (``import stream_latency``), with no ``sys.path`` edits. Tests import
the same names: pytest puts ``benchmarks/`` on ``sys.path`` (``pythonpath`` in
pyproject.toml). ``streamo`` is the installed package (``pip install -e .``).

A new benchmark is one script here that prints its result with ``lib.report.print_json_line``;
a helper that two scripts need moves into this package, one that a single script needs stays there.
"""
