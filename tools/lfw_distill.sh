#!/usr/bin/env bash
# The distilled nn4small2-lfw, end to end (recipes/lfw-distill.yaml): import dlib's face ResNet from the installed
# face_recognition_models package, embed the DevTrain people's photos with it (the teacher's rows), and train
# NN4.Small2 toward them; then verify it on View 1.  Needs the `faces` extra.
# Usage: bash tools/lfw_distill.sh [RUN_DIR] [LFW_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/lfw-distill}
LFW=${2:-../shared/data/lfw}
GS=.venv/bin/graphspec
DAT=$(.venv/bin/python -c "from graphspec.faces.align import models_folder as m; print(m() / 'dlib_face_recognition_resnet_model_v1.dat')")
$GS import dlib "$DAT" -o runs/dlib
mkdir -p runs/distill
# the teacher sees the DevTrain people's photos only (the recipe's people file); DevTest stays unseen
tail -n +2 "$LFW/peopleDevTrain.txt" | cut -f1 | sed "s|^|$LFW/lfw-deepfunneled/|" > runs/distill/devtrain-folders.txt
mapfile -t FOLDERS < runs/distill/devtrain-folders.txt
$GS embed runs/dlib/dlib_face_recognition_resnet_model_v1.safetensors "${FOLDERS[@]}" -o runs/distill/teacher.npy
$GS snip specs/nn4small2.yaml --output embeddings --no-freeze -o runs/nn4-embeddings.safetensors
$GS train runs/nn4-embeddings.safetensors --data "$LFW/lfw-deepfunneled" --recipe recipes/lfw-distill.yaml --out "$RUN"
bash tools/lfw_eval.sh "$RUN" "$LFW"
