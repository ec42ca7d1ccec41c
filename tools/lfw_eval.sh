#!/usr/bin/env bash
# Snip a trained run at its embeddings and verify it on LFW View 1 (threshold from DevTrain, accuracy on DevTest),
# with both distances, with and without flip averaging.  Usage: bash tools/lfw_eval.sh RUN_DIR [LFW_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
LFW=${2:-../shared/data/lfw}
GS=.venv/bin/graphspec
$GS snip "$RUN/model.safetensors" --output embeddings -o "$RUN/embeddings.safetensors" > "$RUN/snip.txt"
for metric in sqeuclidean cosine; do
  for flip in "" --flip; do
    echo "== $metric ${flip:-no-flip}"
    $GS verify "$RUN/embeddings.safetensors" --data "$LFW/lfw-deepfunneled" --pairs "$LFW/pairsDevTest.txt" \
        --train-pairs "$LFW/pairsDevTrain.txt" --metric $metric $flip --format json \
        | tee "$RUN/verify-$metric${flip:+-flip}.json" | grep -E '"(accuracy|auc|eer|threshold)"'
  done
done
