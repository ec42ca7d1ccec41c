"""``embed``: images -> rows of a vertex's activation (by default the model's output), with the preprocessing
the model file recorded: one row per photo (its largest face when the model aligns), or with ``every_face`` one row
per face, named ``photo.jpg#k`` (k = 0 for the largest)."""
from __future__ import annotations

import csv
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import GraphspecError, Location
from ..execution import Execution, preprocessing_of

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
# What embed() does with rows holding NaN or infinity: "refuse" (a GraphspecError: no distance, verification,
# identification or clustering can be computed from them) or "warn" (write them, as the model computed them).
NON_FINITE = ("refuse", "warn")
# Images named in a message about non-finite rows before "and N more".
NAMED_IMAGES = 5


class EmbeddingWarning(UserWarning):
    """Rows were embedded, but some hold NaN or infinity."""


def image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given directly, plus the images inside folders (recursively, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise GraphspecError("no such file or folder", location=Location(str(p)))
    if not out:
        raise GraphspecError("no images found in " + ", ".join(map(str, paths)))
    return out


@torch.no_grad()
def embed(model, files: Sequence[Path], *, output: str | None = None, batch_size: int = 64,
          flip: bool = False, progress=None, execution: Execution = Execution(), no_subject: list | None = None,
          every_face: bool = False, non_finite: str = "refuse") -> tuple[np.ndarray, list, list[tuple[Path, str]]]:
    """(rows [N, D] float32, the files embedded, the files skipped with reasons).

    ``no_subject``: a list that receives, instead of the skipped files, the photos where the model's aligner
    found nothing to align to (no face), for callers that score them rather than fail (``verify``).

    ``every_face``: a row for every subject the model's aligner finds in a photo, not only the largest; the files
    embedded are then face names, ``f"{file}#{k}"`` (:func:`face_name`). Refused for a model that does not align.

    ``flip`` averages the activation of each image and its mirror image (test-time augmentation). Images are
    decoded on every core (:class:`_Decoder`); on a GPU the next batch is decoded while the network runs.

    ``non_finite``: rows holding NaN or infinity (a model with broken weights) are refused with a
    :class:`GraphspecError` naming the images (``"refuse"``, the default: nothing can be scored from them), or kept
    with an :class:`EmbeddingWarning` (``"warn"``).
    """
    from ..compiler import subgraph
    if non_finite not in NON_FINITE:
        raise ValueError(f"non_finite must be one of {', '.join(NON_FINITE)}; received {non_finite!r}")
    if every_face:
        check_every_face(model, aligned=execution.aligned)
    spec = model.graphspec.spec
    name = output or spec.outputs[0]
    if name not in spec.vertices:
        from ..errors import did_you_mean
        raise GraphspecError(f"no vertex named '{name}'{did_you_mean(name, spec.vertices)}", vertex=name)
    inputs = [i for i in spec.inputs if i in model.graphspec.analysis.needed_for([name])]
    if len(inputs) != 1:
        raise GraphspecError(f"'{name}' is computed from {len(inputs)} inputs ({', '.join(inputs)}); embed feeds one "
                             "image per row: pass --output VERTEX for a vertex of one input (e.g. embeddings)",
                             vertex=name)
    model.eval()
    net = execution.prepare(model, subgraph(model, [name], needed_inputs_only=True))
    prep = execution.preprocessing(model)
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    rows, done, skipped = [], [], []
    with _Decoder(prep, every_face, overlap=not str(execution.device).startswith("cpu")) as decoder:
        for b, (images, kept, bad, empty) in enumerate(decoder.batches(batches)):
            if no_subject is not None:
                no_subject.extend(empty)
            else:
                skipped.extend((f, "no face found") for f in empty)
            skipped.extend(bad)
            if images:
                x = execution.input(prep.to_tensor(np.stack(images)))
                with execution.context():
                    y = net(x)[name]
                    if flip:
                        y = (y + net(x.flip(-1))[name]) / 2
                rows.append(y.float().flatten(1).cpu().numpy())
                done.extend(kept)
            if progress is not None:
                progress(min((b + 1) * batch_size, len(files)))
    data = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    data = data.astype(np.float32)
    check_finite_rows(model, data, done, refuse=non_finite == "refuse")
    return data, done, skipped


def check_finite_rows(model, rows: np.ndarray, names: Sequence, *, refuse: bool = True) -> None:
    """Refuse (or warn about) rows holding NaN or infinity, naming how many and the first images: no distance can
    be computed from them (an all-NaN model once scored ROC AUC 1.0), so nothing is scored from them."""
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1)) if rows.size else np.zeros(0, dtype=np.int64)
    if not bad.size:
        return
    shown = [str(names[i]) for i in bad[:NAMED_IMAGES]]
    more = f" and {bad.size - len(shown):,} more" if bad.size > len(shown) else ""
    report = model.graphspec.weights  # the WeightReport of a model file; None for fresh weights
    source = report.source if report is not None else ""
    broken = ("its weights hold NaN or infinity" if report is not None and report.non_finite
              else "its activations overflow on these images")
    message = (f"{bad.size:,} of {len(rows):,} embeddings hold NaN or infinity ({', '.join(shown)}{more}): the "
               f"model computes non-finite values ({broken})")
    if refuse:
        raise GraphspecError(f"{message}; no distances can be scored from them", location=Location(source))
    warnings.warn(EmbeddingWarning(f"{source + ': ' if source else ''}{message}; they are written as computed"),
                  stacklevel=3)


class _Decoder:
    """Decodes batches of files on every core (Pillow and the aligners release the GIL), each batch split into one
    part per thread. With ``overlap`` (the network runs on a GPU) the next batch is decoded while the current one
    is embedded; without (the network runs on the CPU, with every core) decoding and the network take turns, since
    a decoding thread that preempts one of the network's threads stalls all of them: on 2 cores, photos that need
    their face found embed at 52 images/s instead of 37 with one decoding thread overlapped, aligned ones at
    300 instead of 290 (BENCHMARKS.md)."""

    def __init__(self, prep, every_face: bool, overlap: bool, threads: int | None = None):
        self.prep, self.every_face, self.overlap = prep, every_face, overlap
        self.threads = max(1, threads or torch.get_num_threads())
        self.pool = ThreadPoolExecutor(max_workers=self.threads)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(cancel_futures=True)

    def batches(self, batches: Sequence[Sequence[Path]]):
        """(images, kept, skipped, empty) of each batch, in order."""
        ahead = None  # the parts of the next batch, submitted while the network runs (overlap only)
        for b, files in enumerate(batches):
            result = self._collect(ahead if ahead is not None else self._submit(files))
            ahead = self._submit(batches[b + 1]) if self.overlap and b + 1 < len(batches) else None
            yield result

    def _submit(self, files: Sequence[Path]):
        part = -(-len(files) // self.threads)
        return [self.pool.submit(_decode, self.prep, files[i:i + part], self.every_face)
                for i in range(0, len(files), part)]

    @staticmethod
    def _collect(parts):
        results = [p.result() for p in parts]
        return tuple([x for r in results for x in r[k]] for k in range(4))


def _decode(prep, files: Sequence[Path], every_face: bool = False):
    """(images, their files (face names with ``every_face``), unreadable files with reasons, photos where the
    aligner found no subject)."""
    from ..data.aligners import NoSubject
    from ..data.errors import DataError
    from ..files import unsafe_name
    images, kept, skipped, empty = [], [], [], []
    for f in files:
        unsafe = unsafe_name(str(f))
        if unsafe:  # one row per line of .paths.txt: a name with a line break would shift every row after it
            skipped.append((f, unsafe))
            continue
        try:
            if every_face:
                found = prep.load_every(f)
                images.extend(found)
                kept.extend(face_name(f, k) for k in range(len(found)))
            else:
                images.append(prep.load(f))
                kept.append(f)
        except DataError as e:
            if isinstance(e, NoSubject):
                empty.append(f)
            else:
                skipped.append((f, str(e.problem.message)))
    return images, kept, skipped, empty


def face_name(photo: "str | os.PathLike", k: int) -> str:
    """How the ``k``-th largest face of ``photo`` is named in outputs: ``photo.jpg#k``."""
    return f"{photo}#{k}"


def face_photo(name: str) -> tuple[Path, int]:
    """The photo and the rank of a :func:`face_name`."""
    photo, _, k = str(name).rpartition("#")
    return Path(photo), int(k)


def face_image(prep, name: str):
    """The aligned face (a Pillow image, before the model's crop and resize) that a :func:`face_name` names, for
    pictures of it (``cluster --sheets``)."""
    from ..data.images import open_image
    photo, k = face_photo(name)
    with open_image(photo) as image:
        image.load()
        return prep.subjects(image)[k]


def check_every_face(model, label: str = "the model", aligned: bool = False) -> None:
    """Refuse ``--every-face`` now, before any photo is read, for a model whose preprocessing does not align (or
    with ``--aligned`` photos): it would see each photo whole, as one "face"."""
    if aligned:
        raise GraphspecError("--every-face finds the faces in photos; --aligned says each photo is already one "
                             "aligned face: drop one of them")
    prep = model.graphspec.preprocessing
    if prep is None or preprocessing_of(model).align is None:
        raise GraphspecError(f"--every-face needs a model whose preprocessing aligns (e.g. align: dlib-5pt); {label} "
                             "has none")


OUTPUT_FORMATS = (".npy", ".csv")


def check_output(out: str | os.PathLike) -> Path:
    """The output file, refused now (before any image is embedded) unless it is a format :func:`write` writes."""
    out = Path(out)
    if out.suffix not in OUTPUT_FORMATS:
        raise GraphspecError(f"output must end in .npy or .csv; received '{out.name}'", location=Location(str(out)))
    return out


def embedding_warnings(model, output: str | None = None) -> list[str]:
    """What makes rows of ``model`` poor embeddings: a classifier's output (class scores, not an embedding) or
    weights that were never trained (a spec built with fresh weights)."""
    spec = model.graphspec.spec
    name = output or spec.outputs[0]
    notes = []
    vertex = spec.vertices.get(name)
    if vertex is not None and vertex.entry.loss_head:
        notes.append(f"'{name}' is a {vertex.type} layer: its rows are class scores, not embeddings; cut the model at "
                     f"its embeddings first (graphspec snip MODEL --output VERTEX) or pass --output VERTEX")
    if model.graphspec.weights is None and model.graphspec.surgery is None:
        notes.append("the weights are freshly initialised (a spec, not a trained model file): the rows say nothing "
                     "about the images")
    return notes


def write(rows: np.ndarray, files: Sequence, out: str | os.PathLike) -> list[Path]:
    """``.npy`` (plus ``<out>.paths.txt``) or ``.csv`` (path or face name, then the values); returns the files
    written."""
    out = check_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, rows)
        listing = out.with_suffix(".paths.txt")
        listing.write_text("".join(f"{f}\n" for f in files))
        return [out, listing]
    if out.suffix == ".csv":
        with open(out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path"] + [f"e{i}" for i in range(rows.shape[1] if rows.size else 0)])
            for f, r in zip(files, rows):
                w.writerow([str(f)] + [repr(float(v)) for v in r])
        return [out]
