"""Per-video work on a Ray cluster: ``--executor ray`` of ``streamo frames`` and ``instruct prepare``.

Ray (the ``streamo[cluster]`` extra) is imported only here, only when this executor is chosen.
Work goes out as tasks of one video (or a small batch), each asking one CPU, so Ray runs one
task per CPU it offers; at most two tasks per CPU are in flight, so the driver holds a
bounded window of small results and never a frame. Tasks read and write the files
themselves, so every node must mount the directories at the same paths: ``check_shared``
proves it at start with a marker file that the driver writes and a task on every node reads.

A task whose worker process dies (a decoder crash, the out-of-memory killer) is retried by
Ray up to ``max_retries`` times; errors a task reports are not retried (a damaged file stays
damaged). Attempts are counted in the shared directory (each attempt appends its node and
process to a small file), because Ray tells the driver only the final outcome.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import UsageError

EXECUTORS = ("local", "ray")
DEFAULT_ADDRESS = "auto"
MAX_RETRIES = 3
"""Retries of a task whose worker died, so a video is tried at most 4 times."""
_CHECK_SECONDS = 120.0


class ClusterError(UsageError, RuntimeError):
    """The Ray cluster cannot be used as asked (not installed, unreachable, no shared directory)."""


@dataclass
class TaskOutcome:
    """One task's items and what became of them."""

    start: int
    """Position of the first item in the submitted order."""
    items: list
    results: list | None
    """One result per item; None when the task failed on every attempt (``reason`` says why)."""
    attempts: int
    node: str | None
    """Address of the node of the last attempt."""
    reason: str | None = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--executor ray needs Ray: install the cluster extra (pip install 'streamo[cluster]')") from None
    return ray


def _node_address() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside a Ray worker (never in practice): the host name still says where
        return socket.gethostname()


def _read_marker(path: str) -> tuple[str, str | None]:
    """(node, the marker's text or None) as a task on some node sees it."""
    try:
        return _node_address(), Path(path).read_text(encoding="utf-8")
    except OSError:
        return _node_address(), None


def _run_batch(function: Callable[[Any], Any], items: list, attempts_file: str, cwd: str) -> list:
    """A task: note this attempt, then ``function`` over ``items`` in the driver's directory
    (relative paths and the messages that name them stay as on one machine)."""
    with open(attempts_file, "a", encoding="utf-8") as handle:
        handle.write(f"{_node_address()} {os.getpid()}\n")
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return [function(item) for item in items]


def _attempts(path: Path) -> tuple[int, str | None]:
    """(attempts made, node of the last one) from a finished task's attempts file, which goes
    (a shared filesystem is slow at directories of 136K files)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
        path.unlink()
    except OSError:
        return 1, None
    lines = [line for line in lines if line.strip()]
    return max(len(lines), 1), (lines[-1].split(" ")[0] if lines else None)


class RayExecutor:
    """A connection to a Ray cluster (``address`` ``auto``: the running one, else a local one
    started here and stopped on exit) that maps a function over items as retried tasks."""

    def __init__(self, address: str = DEFAULT_ADDRESS, max_retries: int = MAX_RETRIES, log=sys.stderr):
        self.address = address
        self.max_retries = max_retries
        self.log = log
        self.cpus = 0
        self._owned = False
        self._attempts_dir: Path | None = None

    def __enter__(self) -> "RayExecutor":
        ray = _import_ray()
        self._owned = not ray.is_initialized()  # a caller's own ray.init (its options) is used as it is
        try:
            if self._owned:
                ray.init(address=self.address, logging_level=logging.WARNING)
        except ConnectionError as exc:
            if self.address != DEFAULT_ADDRESS:
                raise ClusterError(f"--ray-address {self.address}: no Ray cluster there ({exc})") from None
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            print(f"no running Ray cluster: started a local one with {ray.cluster_resources().get('CPU', 0):g} CPUs "
                  "(stopped at the end)", file=self.log)
        except ValueError as exc:
            raise ClusterError(f"--ray-address {self.address}: {exc}") from None
        self.cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.cpus < 1:
            self.__exit__()
            raise ClusterError(f"the Ray cluster at {self.address} offers no CPU to run tasks on")
        return self

    def __exit__(self, *exc_info) -> None:
        if self._attempts_dir is not None:
            shutil.rmtree(self._attempts_dir, ignore_errors=True)
            self._attempts_dir = None
        if self._owned:
            _import_ray().shutdown()

    def check_shared(self, directory: str | os.PathLike[str]) -> None:
        """Make sure a task on every node with CPUs sees ``directory`` as the driver does."""
        ray = _import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(16)
        marker = directory / f".streamo-shared-{token}"
        marker.write_text(token, encoding="utf-8")
        try:
            nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) >= 1]
            read = ray.remote(_read_marker)
            refs = [read.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                    .remote(str(marker)) for node in nodes]
            try:
                seen = ray.get(refs, timeout=_CHECK_SECONDS)
            except ray.exceptions.GetTimeoutError:
                raise ClusterError(f"no answer within {_CHECK_SECONDS:g} s from a task on each Ray node "
                                   f"(checking that every node sees {directory})") from None
        finally:
            marker.unlink(missing_ok=True)
        blind = sorted({node for node, text in seen if text != token})
        if blind:
            raise ClusterError(
                f"{directory}: the Ray node(s) {', '.join(blind)} do not see this directory as the driver does; "
                "put it on a filesystem every node mounts at the same path (NFS, Lustre, a cloud file share)"
            )
        self._attempts_dir = directory / f".streamo-attempts-{token}"
        self._attempts_dir.mkdir()

    def map(self, function: Callable[[Any], Any], items: Sequence, batch: int = 1) -> Iterator[TaskOutcome]:
        """``function`` over ``items`` in tasks of ``batch`` items, outcomes as tasks finish.

        ``check_shared`` must have run (attempts are counted in that directory).
        """
        ray = _import_ray()
        if self._attempts_dir is None:
            raise RuntimeError("RayExecutor.map needs check_shared first")
        task = ray.remote(_run_batch).options(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)
        starts = iter(range(0, len(items), batch))
        cwd = os.getcwd()
        in_flight: dict[Any, int] = {}

        def submit() -> None:
            for start in starts:
                attempts_file = str(self._attempts_dir / str(start))
                in_flight[task.remote(function, list(items[start:start + batch]), attempts_file, cwd)] = start
                if len(in_flight) >= 2 * self.cpus:
                    return

        submit()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            ref = ready[0]
            start = in_flight.pop(ref)
            attempts, node = _attempts(self._attempts_dir / str(start))
            chunk = list(items[start:start + batch])
            try:
                outcome = TaskOutcome(start, chunk, ray.get(ref), attempts, node)
            except ray.exceptions.RayError as exc:
                outcome = TaskOutcome(start, chunk, None, attempts, node, _task_failure(exc, attempts))
            submit()
            yield outcome


def _task_failure(exc: Exception, attempts: int) -> str:
    import ray

    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return (f"its worker process died on each of {attempts} attempts "
                "(a crash in the decoder, or the out-of-memory killer)")
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[-1] if first else ''}"

