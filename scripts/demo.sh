#!/usr/bin/env bash
# The main job end to end on the shipped example, on CPU, in a few minutes:
# tiny local Qwen2.5-VL -> convert raw annotations -> extract frames -> swift sft (plugin,
# stream_focal loss) -> stream the example video through the trained model second by second.
# Sets up the environment on first use. Outputs go to ${DEMO_DIR:-output/demo}.
source "$(dirname "$0")/env.sh"
out="${DEMO_DIR:-output/demo}"
model=.cache/tiny-qwen2.5-vl
mkdir -p "$out"

echo "== 1/5 build the tiny random Qwen2.5-VL (real Qwen2 tokenizer, nothing downloaded): $model"
streamo tiny-model "$model"

echo "== 2/5 convert dataset/example/raw_data.json into stream conversations"
streamo convert --input dataset/example/raw_data.json --output "$out/stream.json" \
    --video-prefix dataset/example --strict
streamo stats --input "$out/stream.json"

echo "== 3/5 extract 1-fps frames into the frame cache"
streamo frames --input "$out/stream.json" --cache-dir "$out/frames" --max-pixels 3136

echo "== 4/5 swift sft on CPU (PRESET=cpu-tiny bash train.sh)"
rm -rf "$out/train"
STREAMO_FRAME_CACHE="$out/frames" PRESET=cpu-tiny MODEL="$model" DATASET="$out/stream.json" \
    OUTPUT_DIR="$out/train" bash train.sh > "$out/train.log" 2>&1 \
    || { tail -30 "$out/train.log"; echo "training failed; full log: $out/train.log" >&2; exit 1; }
checkpoint="$(ls -d "$out"/train/v*/checkpoint-* | tail -1)"
python - "$(dirname "$checkpoint")/logging.jsonl" <<'PY'
import json, sys
losses = [row["loss"] for row in map(json.loads, open(sys.argv[1])) if "loss" in row]
print(f"training loss: {losses[0]:.3f} at step 1 -> {losses[-1]:.3f} at step {len(losses)}")
PY
echo "checkpoint: $checkpoint"

echo "== 5/5 stream the example video through the trained model, one line per second"
streamo stream --model "$checkpoint" --video dataset/example/videos/synth_0000.mp4 \
    --questions dataset/example/raw_data.json --sample 1 --max-new-tokens 24

echo "== watch it live: serve the checkpoint with the web page, then open http://127.0.0.1:8000/"
echo "   $STREAMO_VENV/bin/streamo serve --model $checkpoint"
