#!/usr/bin/env bash
# The main job end to end on the shipped example, on CPU, in a few minutes:
# tiny local Qwen2.5-VL -> convert raw annotations -> extract frames -> swift sft (plugin,
# stream_focal loss) -> fit the checkpoint's output head to the example (so that the page shows it
# deciding) -> stream the example video through it second by second.
# Sets up the environment on first use. Outputs go to ${DEMO_DIR:-output/demo}.
source "$(dirname "$0")/env.sh"
export DS_ACCELERATOR=cpu  # a CPU demo: say so, instead of DeepSpeed's warning that it found no GPU
out="${DEMO_DIR:-output/demo}"
model=.cache/tiny-qwen2.5-vl
mkdir -p "$out"

echo "== 1/6 build the tiny random Qwen2.5-VL (real Qwen2 tokenizer, nothing downloaded): $model"
streamo tiny-model "$model"

echo "== 2/6 convert dataset/example/raw_data.json into stream conversations"
streamo convert --input dataset/example/raw_data.json --output "$out/stream.json" \
    --video-prefix dataset/example --strict
streamo stats --input "$out/stream.json"

echo "== 3/6 extract 1-fps frames into the frame cache"
streamo frames --input "$out/stream.json" --cache-dir "$out/frames" --max-pixels 3136

echo "== 4/6 swift sft on CPU (PRESET=cpu-tiny bash train.sh)"
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

fitted="$out/example-fitted"
echo "== 5/6 the page's demo model: the tiny model with the state tokens, its output head fitted to the"
echo "   example's Narration sample on synth_0000: $fitted"
echo "   (80 CPU steps teach the tiny model the reply format, not the task, so the trained checkpoint says one"
echo "   state every second; the fitted model plays this clip as annotated, so the page shows it deciding."
echo "   It is a tiny model fitted to the example clips: it shows the page working; it is not a general assistant)"
streamo tiny-model --with-state-tokens "$model-states"
streamo fit-head --model "$model-states" --data "$out/stream.json" --sample 2 --max-pixels 4704 --out "$fitted"

echo "== 6/6 stream the example video through the fitted model, one line per second"
streamo stream --model "$fitted" --video dataset/example/videos/synth_0000.mp4 \
    --questions dataset/example/raw_data.json --sample 2 --max-new-tokens 24

question="$(python -c 'import json; print(json.load(open("dataset/example/raw_data.json"))[2]["question"][0]["content"])')"
echo "== watch it live: serve the fitted model with the web page, then open http://127.0.0.1:8000/"
echo "   $STREAMO_VENV/bin/streamo serve --model $fitted --sources dataset/example/videos"
echo "   pick Server video (List, synth_0000.mp4) or the file dataset/example/videos/synth_0000.mp4,"
echo "   ask \"$question\" and press Start"
