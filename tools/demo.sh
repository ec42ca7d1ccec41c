#!/usr/bin/env bash
# Set up (if needed) and run the main job end to end on the tutorial network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
GS=.venv/bin/graphspec
SPEC=specs/nn4small2.yaml
echo "== validate"; $GS validate "$SPEC"
echo "== summary";  $GS summary "$SPEC" --batch-size 48
echo "== forward";  $GS forward "$SPEC" --batch-size 8 --seed 123
