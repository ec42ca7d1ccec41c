#!/usr/bin/env bash
# Issue 6's ablation at equal budget (12 minutes of training each, one after the other so that each has the CPU):
# the shipped recipe with center loss, the same without it (softmax only), and the tutorial's DL4J configuration;
# each snipped at `embeddings` and verified on pairsDevTest with the pairsDevTrain threshold.
#   bash tools/ablation.sh [LFW_DIR]      -> runs/ablation-*/ and a summary line per run
set -euo pipefail
cd "$(dirname "$0")/.."
LFW=${1:-../shared/data/lfw}
for r in center softmax tutorial-dl4j; do
  out=runs/ablation-$r
  rm -rf "$out"
  start=$(date +%s)
  .venv/bin/graphspec train specs/nn4small2.yaml --data "$LFW/lfw-deepfunneled" \
      --recipe "recipes/ablation/$r-12min.yaml" --out "$out" > "$out.log" 2>&1
  wall=$(( $(date +%s) - start ))
  .venv/bin/graphspec snip "$out/model.safetensors" --output embeddings -o "$out/embeddings.safetensors" > /dev/null
  .venv/bin/graphspec verify "$out/embeddings.safetensors" --data "$LFW/lfw-deepfunneled" \
      --pairs "$LFW/pairsDevTest.txt" --train-pairs "$LFW/pairsDevTrain.txt" --format json > "$out/verify.json"
  acc=$(.venv/bin/python -c "import json; d=json.load(open('$out/verify.json')); print(f\"accuracy {d['accuracy']:.3f}, AUC {d['auc']:.3f}, EER {d['eer']:.3f}\")")
  echo "$r: train+setup ${wall}s, $(grep -c '"type": "epoch"' "$out/metrics.jsonl") epochs, $acc" | tee -a runs/ablation-summary.txt
done
