"""dlib's face model imported into graphspec (issue 20): LFW View 1 accuracy and descriptor speed side by side with
dlib's own, on the same aligned chips.

    .venv/bin/python benchmarks/bench_dlib.py          # needs face_recognition_models, dlib-bin and LFW

Chips: dlib's HOG detector (upsampling once) on the LFW deep-funneled image, the largest face, dlib's 5-point
landmarks, `dlib.get_face_chip(img, shape, 150, 0.25)` — what `compute_face_descriptor(img, shape)` feeds its
network. Images where no face is found are counted and their pairs scored as different (a miss costs accuracy).
Accuracy: pairsDevTest with the Euclidean threshold chosen on pairsDevTrain (and dlib's documented 0.6). Speed:
descriptors per second of graphspec's forward (batches of 64, float32, channels-last) and of dlib's
`compute_face_descriptor` on a list of the same chips, interleaved, in one run on this CPU.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphspec.faces.verify.metrics import best_threshold  # noqa: E402
from graphspec.faces.align import models_folder as models_dir  # noqa: E402
from graphspec.faces.data.protocol import read_pairs  # noqa: E402
from graphspec.importers import import_model  # noqa: E402


def chips_of(files: list[Path]) -> tuple[np.ndarray, list[bool]]:
    import dlib
    from PIL import Image
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(models_dir() / "shape_predictor_5_face_landmarks.dat"))
    chips, found = [], []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        faces = detector(img, 1)
        if not faces:
            chips.append(np.zeros((150, 150, 3), np.uint8))
            found.append(False)
            continue
        face = max(faces, key=lambda r: r.width() * r.height())
        chips.append(dlib.get_face_chip(img, landmarks(img, face), size=150, padding=0.25))
        found.append(True)
    return np.stack(chips), found


def ours(net, chips: np.ndarray, batch: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(chips), batch):
            x = torch.from_numpy(chips[i:i + batch]).permute(0, 3, 1, 2).float()
            out.append(net(x.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out)


def theirs(chips: np.ndarray) -> np.ndarray:
    import dlib
    model = dlib.face_recognition_model_v1(str(models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))
    return np.array(model.compute_face_descriptor(list(chips)))


def accuracy(rows, index, found, pairs, threshold=None):
    a = np.array([index[p] for p, _, _ in pairs])
    b = np.array([index[q] for _, q, _ in pairs])
    same = np.array([s for _, _, s in pairs], bool)
    d = np.linalg.norm(rows[a] - rows[b], axis=1)
    d[~(np.asarray(found)[a] & np.asarray(found)[b])] = np.inf  # no face found: scored as different
    if threshold is None:
        threshold = best_threshold(d[np.isfinite(d)], same[np.isfinite(d)])
    return float(((d < threshold) == same).mean()), threshold


def main() -> None:
    lfw = Path(os.environ.get("GRAPHSPEC_LFW") or Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw")
    images = lfw / "lfw-deepfunneled"
    train_pairs = [(*p.paths(images), p.same) for p in read_pairs(lfw / "pairsDevTrain.txt")]
    test_pairs = [(*p.paths(images), p.same) for p in read_pairs(lfw / "pairsDevTest.txt")]
    files = sorted({p for pairs in (train_pairs, test_pairs) for a, b, _ in pairs for p in (a, b)})
    index = {f: i for i, f in enumerate(files)}
    start = time.perf_counter()
    chips, found = chips_of(files)
    print(f"{len(files)} images, a face found in {sum(found)} ({time.perf_counter() - start:.0f} s)")
    net = import_model(models_dir() / "dlib_face_recognition_resnet_model_v1.dat").model()
    net = net.to(memory_format=torch.channels_last).eval()
    rows = ours(net, chips)
    _, threshold = accuracy(rows, index, found, train_pairs)
    acc, _ = accuracy(rows, index, found, test_pairs, threshold)
    acc06, _ = accuracy(rows, index, found, test_pairs, 0.6)
    print(f"pairsDevTest accuracy {acc:.4f} (threshold {threshold:.3f} from pairsDevTrain); {acc06:.4f} at dlib's "
          f"0.6; published LFW (View 2): 0.9938")
    sample = chips[np.asarray(found)][:256]
    reference = theirs(sample[:16])
    print(f"max |graphspec - dlib| on 16 chips: {np.abs(ours(net, sample[:16]) - reference).max():.2e}")
    times = {"graphspec": [], "dlib": []}
    for _ in range(3):  # interleaved
        t = time.perf_counter()
        ours(net, sample)
        times["graphspec"].append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs(sample)
        times["dlib"].append(time.perf_counter() - t)
    rate = {k: len(sample) / min(v) for k, v in times.items()}
    print(f"descriptors/s on {len(sample)} chips (best of 3, interleaved): graphspec {rate['graphspec']:.1f}, dlib "
          f"{rate['dlib']:.1f}, ratio {rate['graphspec'] / rate['dlib']:.2f}x (threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
