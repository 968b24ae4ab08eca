#!/usr/bin/env bash
# The main job end to end on the shipped example, on CPU, in a few minutes:
# tiny local Qwen2.5-VL -> convert raw annotations -> extract frames -> swift sft (plugin,
# stream_focal loss) -> fit the checkpoint's output head to the example (so that the page shows it
# deciding) -> stream the example video through it second by second -> score the trained checkpoint
# and draw its timelines (the README's picture).
# Sets up the environment on first use. Outputs go to ${DEMO_DIR:-output/demo} (under the clone when relative).
source "$(dirname "$0")/env.sh"
export DS_ACCELERATOR=cpu  # a CPU demo: say so, instead of DeepSpeed's warning that it found no GPU
# Absolute paths, so that every path and command the demo prints works from any directory.
out="$(realpath -m "${DEMO_DIR:-output/demo}")"
example="$STREAMO_ROOT/dataset/example"
model="$STREAMO_ROOT/.cache/tiny-qwen2.5-vl"
sample=2  # the example's Narration sample on synth_0000.mp4: the page model's, and the README picture's
mkdir -p "$out"

echo "== 1/7 build the tiny random Qwen2.5-VL (real Qwen2 tokenizer, nothing downloaded): $model"
streamo tiny-model "$model"

echo "== 2/7 convert $example/raw_data.json into stream conversations"
streamo convert --input "$example/raw_data.json" --output "$out/stream.json" --video-prefix "$example" --strict
streamo stats --input "$out/stream.json"

echo "== 3/7 extract 1-fps frames into the frame cache"
streamo frames --input "$out/stream.json" --cache-dir "$out/frames" --max-pixels 3136

echo "== 4/7 swift sft on CPU (PRESET=cpu-tiny bash train.sh)"
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
echo "== 5/7 the page's demo model: the tiny model with the state tokens, its output head fitted to the"
echo "   example's Narration sample on synth_0000: $fitted"
echo "   (80 CPU steps teach the tiny model the reply format, not the task, so the trained checkpoint says one"
echo "   state every second; the fitted model plays this clip as annotated, so the page shows it deciding."
echo "   It is a tiny model fitted to the example clips: it shows the page working; it is not a general assistant)"
streamo tiny-model --with-state-tokens "$model-states"
streamo fit-head --model "$model-states" --data "$out/stream.json" --sample "$sample" --max-pixels 4704 --out "$fitted"

echo "== 6/7 stream the example video through the fitted model, one line per second"
streamo stream --model "$fitted" --video "$example/videos/synth_0000.mp4" \
    --questions "$example/raw_data.json" --sample "$sample" --max-new-tokens 24

echo "== 7/7 score the trained checkpoint against the example's annotations, one timeline per sample"
echo "   ($out/plots/sample_$sample.png is the README's picture: the checkpoint says one state every second)"
streamo eval --model "$checkpoint" --data "$example/raw_data.json" --video-prefix "$example" \
    --max-new-tokens 24 --predictions-out "$out/pred.jsonl" --out "$out/report.json" --plot "$out/plots/"

question="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))[int(sys.argv[2])]["question"][0]["content"])' \
    "$example/raw_data.json" "$sample")"
echo "== watch it live: serve the fitted model with the web page, then open http://127.0.0.1:8000/"
echo "   $STREAMO_VENV/bin/streamo serve --model $(printf %q "$fitted") --sources $(printf %q "$example")"
echo "   pick Server video (List, videos/synth_0000.mp4), type \"$question\" and press Start;"
echo "   the page sets its sample id for downloads to $sample (this sample, from the raw_data.json beside the videos;"
echo "   type it for the uploaded file $example/videos/synth_0000.mp4), and its predictions.jsonl scores with:"
echo "   $STREAMO_VENV/bin/streamo eval --predictions predictions.jsonl --data $(printf %q "$example/raw_data.json")" \
    "--video-prefix $(printf %q "$example")"
