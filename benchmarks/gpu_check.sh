#!/usr/bin/env bash
# The GPU check, run first whenever a GPU is lent (docs/benchmarks.md, "GPU kit and check"). On a machine
# with NVIDIA GPUs, Python 3.12, torch and transformers and no registry access: installs the kit
# that benchmarks/gpu_kit.py made here (wheels and the check's data; nothing needs PyAV), then runs
# the steps most valuable first within BUDGET seconds, writing JSON lines to $OUT:
#
#   OUT=/path/to/out bash benchmarks/gpu_check.sh                 # the kit in .whl, full size on the GPU
#   KIT=/tmp/tiny-kit OUT=/path/to/out bash benchmarks/gpu_check.sh --config tiny
#       # the tiny model on CPU (the tests' scale), data from gpu_kit.py --config tiny --no-wheels --out /tmp/tiny-kit
#
# $OUT/results.jsonl  one JSON line each, in order (at most 8 files come back from a lent machine):
#   the environment (Python, torch, transformers, GPUs, host memory, ms-swift and DeepSpeed; av: null);
#   benchmarks/train_gpu.py: 3B full ZeRO-3, 7B LoRA ZeRO-2, STEPS optimizer steps each;
#   benchmarks/stream_latency.py --config 7b --device cuda, 600 s;
#   benchmarks/serve_load.py --config 7b --backend transformers --max-batch 16, frames from the kit:
#     the sessions sustained at p95 < 250 ms with batched decisions;
#   with 2 GPUs or more only (the lent kinds have one; the step's line then says it was skipped):
#   ranks-1 and ranks-2, 7B LoRA ZeRO-2 on 1 GPU with GRAD_ACCUM 2 and on 2 GPUs, the same rows per
#   optimizer step, so their first losses must agree (docs/training.md, "Several GPUs and nodes");
#   a line per step: exit status, seconds, or why it was skipped
# $OUT/*.log           everything each step printed: install, env, train, latency, serve
# Knobs: KIT (default .whl in the checkout), SITE (install target, default /tmp/site), BUDGET (seconds
# for all steps, default 510 for full size: one 9-minute call with the install), STEPS (train_gpu
# --steps, default 3), SETUPS (train_gpu --setups), ONLY (comma-separated steps among train,latency,serve,ranks;
# default all).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG=7b
if [[ "${1:-}" == "--config" && -n "${2:-}" ]]; then CONFIG="$2"; shift 2; fi
[[ "$CONFIG" == 7b || "$CONFIG" == tiny ]] || { echo "gpu_check.sh: --config 7b | tiny" >&2; exit 2; }
[[ $# -eq 0 ]] || { echo "gpu_check.sh: unknown argument $1 (only --config 7b | tiny)" >&2; exit 2; }
OUT="${OUT:?set OUT to the folder for the results}"
KIT="${KIT:-$REPO/.whl}"
SITE="${SITE:-/tmp/site}"
PYTHON="${PYTHON:-python3}"
ONLY="${ONLY:-train,latency,serve,ranks}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
START=$SECONDS

# The kit, as the device entry prescribes: its wheels into a target folder put on PYTHONPATH.
if compgen -G "$KIT/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/*.whl \
        >"$OUT/install.log" 2>&1 || { echo "gpu_check.sh: installing the kit failed, see $OUT/install.log" >&2; exit 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0 PYTHONUNBUFFERED=1
# train.sh finds swift on PATH next to this Python when there is no .venv in the checkout.
export PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
# The check's data at the absolute path it was made at (the frame cache's keys hold it), mtimes kept.
DATA=""
if [[ -f "$KIT/gpu-check-data.json" ]]; then
    DATA="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["root"])' "$KIT/gpu-check-data.json")"
    tar -xf "$KIT/gpu-check-data.tar" -C / || { echo "gpu_check.sh: unpacking the check's data failed" >&2; exit 1; }
fi

# JSON lines only: DeepSpeed logs to standard output too.
json_lines() { grep '^{' "$1" >>"$RESULTS"; }

"$PYTHON" - >"$OUT/env.log" 2>&1 <<'EOF'
import importlib.util, json, platform
info = {"benchmark": "gpu_check_env", "python": platform.python_version()}
with open("/proc/meminfo") as handle:
    info["host_memory_gib"] = round(int(handle.readline().split()[1]) / 2**20, 1)
for name in ("torch", "transformers", "swift", "deepspeed", "peft", "accelerate", "av"):
    try:
        info[name] = __import__(name).__version__ if importlib.util.find_spec(name) else None
    except Exception as exc:  # reported, not fatal: the steps say what fails
        info[name] = repr(exc)
try:
    import torch
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["gpu_memory_gib"] = [round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)
                              for i in range(torch.cuda.device_count())]
except Exception as exc:
    info["torch_error"] = repr(exc)
print(json.dumps(info))
EOF
json_lines "$OUT/env.log"

if [[ "$CONFIG" == tiny ]]; then
    BUDGET="${BUDGET:-900}"
    TRAIN=(--config tiny --setups "${SETUPS:-tiny-lora-zero2}" --steps "${STEPS:-2}")
    LATENCY=(--config tiny --device cpu --seconds 20 --marks 10,20 --window 5 --samples 2 --reencode-samples 1)
    SERVE=(--config tiny --seconds 3 --max-sessions 2 --saturation-sessions 2 --saturation-frames 6
           --engine-frames 3 --batch 2 --batch-context 40 --max-batch 2)
    CAPS=(600 300 300)
    MINS=(30 30 30)
else
    BUDGET="${BUDGET:-510}"
    TRAIN=(--config full --setups "${SETUPS:-3b-full-zero3,7b-lora-zero2}" --steps "${STEPS:-3}")
    # Sized to their caps from the 2026-11-24 H100 figures (95-250 ms a silent second, 0.5 s an
    # answer, 15 s to re-encode 600 s): one re-encode per mark; 8 saturating sessions of 40 frames.
    LATENCY=(--config 7b --device cuda --seconds 600 --reencode-samples 1)
    # Batched decisions (one server at --max-batch 16): sessions sustained at p95 < 250 ms, up to 64.
    SERVE=(--config 7b --seconds 8 --max-sessions 64 --saturation-sessions 16 --saturation-frames 40 --flood-sessions 0
           --max-batch 16 --p95-limit-ms 250)
    CAPS=(360 300 300)
    MINS=(120 240 200)   # a step that cannot finish in what is left is skipped, not started
fi
[[ -n "$DATA" ]] && SERVE+=(--frames "$DATA/serve-frames")

# step NAME CAP MIN COMMAND...: runs within min(CAP, what is left of BUDGET) when that is at least MIN
# seconds (else skipped), its output in $OUT/NAME.log;
# its JSON lines, then one line on the step itself, go to results.jsonl (also after a timeout).
step() {
    local name="$1" cap="$2" least="$3" left limit begin code
    shift 3
    left=$((BUDGET - (SECONDS - START)))
    limit=$((left < cap ? left : cap))
    if [[ ",$ONLY," != *",$name,"* ]]; then
        echo "{\"step\": \"$name\", \"skipped\": \"not in ONLY\"}" >>"$RESULTS"; return
    fi
    if ((limit < least)); then
        echo "{\"step\": \"$name\", \"skipped\": \"budget\", \"seconds_left\": $left}" >>"$RESULTS"; return
    fi
    begin=$SECONDS
    timeout -k 20 "$limit" "$@" >"$OUT/$name.log" 2>&1
    code=$?
    json_lines "$OUT/$name.log"
    echo "{\"step\": \"$name\", \"exit\": $code, \"timed_out\": $([[ $code == 124 || $code == 137 ]] && echo true || echo false), \"seconds\": $((SECONDS - begin)), \"limit_s\": $limit}" >>"$RESULTS"
}

# Training first: ms-swift and DeepSpeed at real size have never run on a GPU here. train.sh runs in
# its own process group; train_gpu kills it at --train-timeout or on the step's SIGTERM.
step train "${CAPS[0]}" "${MINS[0]}" "$PYTHON" "$REPO/benchmarks/train_gpu.py" "${TRAIN[@]}" --train-timeout $((CAPS[0] / 2)) \
    ${DATA:+--work "$DATA"}
rm -rf "${DATA:-/nonexistent}/models" "${DATA:-/nonexistent}/runs"   # tens of GB, not results
step latency "${CAPS[1]}" "${MINS[1]}" "$PYTHON" "$REPO/benchmarks/stream_latency.py" "${LATENCY[@]}"
step serve "${CAPS[2]}" "${MINS[2]}" "$PYTHON" "$REPO/benchmarks/serve_load.py" "${SERVE[@]}" --backend transformers --soak-seconds 0
if [[ ",$ONLY," == *",ranks,"* ]]; then
    GPUS="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
    if [[ "$CONFIG" == 7b && "$GPUS" -ge 2 ]]; then
        RANKS=(--config full --setups 7b-lora-zero2 --steps "${STEPS:-3}" --train-timeout 240)
        ONLY="ranks-1,ranks-2" step ranks-1 300 240 env NPROC_PER_NODE=1 "$PYTHON" "$REPO/benchmarks/train_gpu.py" "${RANKS[@]}" --grad-accum 2
        ONLY="ranks-1,ranks-2" step ranks-2 300 240 env NPROC_PER_NODE=2 "$PYTHON" "$REPO/benchmarks/train_gpu.py" "${RANKS[@]}" --grad-accum 1
    else
        echo "{\"step\": \"ranks\", \"skipped\": \"needs 2 GPUs and --config 7b\", \"gpus\": $GPUS}" >>"$RESULTS"
    fi
fi
cat "$RESULTS"
