#!/usr/bin/env bash
# Train a streaming assistant with `swift sft` and the Streamo plugin.
#
#   bash train.sh                              # GPU recipe: Qwen2.5-VL-7B-Instruct, bf16, DeepSpeed ZeRO-2
#   PRESET=cpu-tiny bash train.sh              # the tiny local model on CPU, a few steps (smoke run)
#   DATASET=data/stream.jsonl TUNER=lora bash train.sh --num_train_epochs 2   # extra args go to swift sft
#   DATASET="data/qa.jsonl#20000 data/narration.jsonl" bash train.sh          # several files, ms-swift's FILE#N
#
# Knobs (environment): MODEL DATASET OUTPUT_DIR NPROC_PER_NODE NNODES NODE_RANK MASTER_ADDR
# MASTER_PORT DEEPSPEED (zero2 | zero3 | none | path to a JSON) TUNER (full | lora) MAX_PIXELS
# MAX_LENGTH, and LEARNING_RATE EPOCHS BATCH_SIZE GRAD_ACCUM LOSS STREAMO_FRAME_CACHE.
# Two nodes of 8 GPUs each (run on both, NODE_RANK=0 on the one whose address is MASTER_ADDR):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 bash train.sh
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 bash train.sh
# Several ranks without a GPU run over gloo (DEEPSPEED=none, zero2 or zero3; docs/training.md):
#   NPROC_PER_NODE=2 PRESET=cpu-tiny bash train.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${STREAMO_VENV:-$REPO/.venv}"
if [[ -x "$VENV/bin/swift" ]]; then
    PYTHON="$VENV/bin/python"
    SWIFT="$VENV/bin/swift"
else
    PYTHON="$(command -v python3)"
    SWIFT="$(command -v swift || true)"
    [[ -n "$SWIFT" ]] || { echo "train.sh: ms-swift is not installed (no $VENV/bin/swift, no swift on PATH)" >&2; exit 2; }
fi
has_module() { "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)" 2>/dev/null; }

PRESET="${PRESET:-gpu}"
case "$PRESET" in
gpu)
    # Before any download: without CUDA this recipe cannot run, and the tiny CPU one can.
    "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null || {
        echo "train.sh: the GPU recipe needs CUDA and torch sees no GPU here; on CPU run PRESET=cpu-tiny bash train.sh" >&2
        exit 2
    }
    # A hub id is downloaded now (ModelScope, or the Hugging Face hub with USE_HF=1): a failure is one line.
    MODEL="$("$PYTHON" -m streamo.swift_plugin.fetch "${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}")" || exit 2
    OUTPUT_DIR="${OUTPUT_DIR:-$REPO/output/streamo}"
    if [[ -z "${NPROC_PER_NODE:-}" ]] && command -v nvidia-smi >/dev/null; then
        NPROC_PER_NODE="$(nvidia-smi -L | wc -l)"
    fi
    DEEPSPEED="${DEEPSPEED:-zero2}"
    MAX_PIXELS="${MAX_PIXELS:-100352}"        # 128 visual tokens per frame
    MAX_LENGTH="${MAX_LENGTH:-16384}"
    LEARNING_RATE="${LEARNING_RATE:-1e-5}"
    EPOCHS="${EPOCHS:-1}"
    BATCH_SIZE="${BATCH_SIZE:-1}"
    GRAD_ACCUM="${GRAD_ACCUM:-4}"
    if has_module flash_attn; then ATTN=flash_attention_2; else ATTN=sdpa; fi
    PRECISION=(--torch_dtype bfloat16 --bf16 true)
    EXTRA=(--gradient_checkpointing true --dataloader_num_workers 4 --dataset_num_proc 4 --save_steps 500
           --save_total_limit 3 --logging_steps 10 --warmup_ratio 0.03)
    if has_module liger_kernel; then EXTRA+=(--use_liger_kernel true); fi
    ;;
cpu-tiny)
    MODEL="${MODEL:-$REPO/.cache/tiny-qwen2.5-vl}"
    if [[ "$MODEL" == "$REPO/.cache/tiny-qwen2.5-vl" ]]; then
        "$PYTHON" -m streamo.tiny_model "$MODEL"
    fi
    OUTPUT_DIR="${OUTPUT_DIR:-$REPO/output/cpu-tiny}"
    DEEPSPEED="${DEEPSPEED:-none}"
    MAX_PIXELS="${MAX_PIXELS:-3136}"          # 4 visual tokens per frame
    MAX_LENGTH="${MAX_LENGTH:-256}"           # the example's clips become several windows
    LEARNING_RATE="${LEARNING_RATE:-2e-2}"
    EPOCHS="${EPOCHS:-1}"
    BATCH_SIZE="${BATCH_SIZE:-1}"
    GRAD_ACCUM="${GRAD_ACCUM:-1}"
    ATTN=sdpa
    PRECISION=(--torch_dtype float32 --fp16 false --bf16 false)
    MAX_STEPS="${MAX_STEPS:-80}"              # enough for the tiny model to open each reply with a state token
    EXTRA=(--max_steps "$MAX_STEPS" --gradient_checkpointing false --dataloader_num_workers 0
           --save_steps "$MAX_STEPS" --logging_steps 1 --warmup_ratio 0 --check_model false)
    ;;
*)
    echo "train.sh: unknown PRESET=$PRESET (gpu | cpu-tiny)" >&2
    exit 2
    ;;
esac

DATASET="${DATASET:-$REPO/dataset/example/stream_format.json}"
# Several datasets are separated by spaces, each in ms-swift's syntax (FILE#N draws N samples);
# one existing file is taken whole, so a path with spaces still works alone.
if [[ -e "$DATASET" ]]; then DATASETS=("$DATASET"); else read -r -a DATASETS <<< "$DATASET"; fi
TUNER="${TUNER:-full}"
LOSS="${LOSS:-stream_focal}"
case "$DEEPSPEED" in
none) DEEPSPEED_ARGS=() ;;
zero2 | zero3) DEEPSPEED_ARGS=(--deepspeed "$REPO/configs/ds_$DEEPSPEED.json") ;;
*) DEEPSPEED_ARGS=(--deepspeed "$DEEPSPEED") ;;
esac
case "$TUNER" in
full) TUNER_ARGS=(--tuner_type full) ;;
# The state tokens are new rows of the embedding and output layers: LoRA must train and save them.
lora) TUNER_ARGS=(--tuner_type lora --target_modules all-linear --lora_rank 64 --lora_alpha 128
                  --modules_to_save embed_tokens lm_head) ;;
*) echo "train.sh: unknown TUNER=$TUNER (full | lora)" >&2; exit 2 ;;
esac

# ms-swift launches torchrun when NPROC_PER_NODE or NNODES is set; DeepSpeed needs it even for one process.
if [[ "${NPROC_PER_NODE:-1}" -gt 1 || "${NNODES:-1}" -gt 1 || "$DEEPSPEED" != none ]]; then
    export NPROC_PER_NODE="${NPROC_PER_NODE:-1}" NNODES="${NNODES:-1}" NODE_RANK="${NODE_RANK:-0}"
    export MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}" MASTER_PORT="${MASTER_PORT:-29500}"
    # Without a GPU, accelerate finds no collective backend on its own and each rank would train
    # alone: plain DDP names gloo here; DeepSpeed gets it from the plugin (swift_plugin/distributed.py).
    if [[ "$DEEPSPEED" == none && $((NPROC_PER_NODE * NNODES)) -gt 1 ]] \
        && "$PYTHON" -c 'import sys, torch; sys.exit(torch.cuda.is_available())' 2>/dev/null; then
        EXTRA+=(--use_cpu true --ddp_backend gloo)
    fi
else
    unset NPROC_PER_NODE NNODES
fi
export MAX_PIXELS

set -x
exec "$SWIFT" sft \
    --model "$MODEL" \
    --template stream_qwen2_5_vl \
    --external_plugins "$REPO/plugin/streamo_plugin.py" \
    --new_special_tokens "$REPO/configs/special_tokens.txt" \
    --dataset "${DATASETS[@]}" \
    --split_dataset_ratio 0 \
    --output_dir "$OUTPUT_DIR" \
    --max_length "$MAX_LENGTH" \
    --max_pixels "$MAX_PIXELS" \
    --loss_type "$LOSS" \
    --freeze_vit true --freeze_aligner false --freeze_llm false \
    --attn_impl "$ATTN" \
    --learning_rate "$LEARNING_RATE" \
    --num_train_epochs "$EPOCHS" \
    --per_device_train_batch_size "$BATCH_SIZE" \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --report_to none \
    "${TUNER_ARGS[@]}" "${PRECISION[@]}" "${DEEPSPEED_ARGS[@]}" "${EXTRA[@]}" "$@"
