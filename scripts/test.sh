#!/usr/bin/env bash
# The test command: sets up the environment if needed, then runs the whole test suite.
source "$(dirname "$0")/env.sh"
python -m pytest -q "$@"
