#!/usr/bin/env bash
# The main job end to end on the shipped example, on CPU: sets up the environment if
# needed, converts dataset/example/raw_data.json into stream conversations and prints
# their statistics. Outputs go to ${DEMO_DIR:-output/demo}.
source "$(dirname "$0")/env.sh"
out="${DEMO_DIR:-output/demo}"
mkdir -p "$out"
echo "== convert the shipped example (dataset/example/raw_data.json)"
streamo convert --input dataset/example/raw_data.json --output "$out/stream.json" \
    --video-prefix dataset/example --strict
echo "== statistics of $out/stream.json"
streamo stats --input "$out/stream.json"
