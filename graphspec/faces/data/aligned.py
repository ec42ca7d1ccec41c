"""``graphspec dataset DIR --align NAME -o OUT``: a face folder written again with every photo aligned.

Like OpenFace's ``align-dlib.py DIR align outerEyesAndNose OUT --size 96``: OUT gets DIR's layout (``OUT/NAME/``),
each photo's largest face as ``NAME_0001.png`` (PNG, so the chip is not compressed a second time) and, with
``every_face``, the others as ``NAME_0001_face1.png``, ``NAME_0001_face2.png``, ... by decreasing size. Photos
without a face are listed and skipped, never written whole; files that cannot be read are listed too.

    >>> from graphspec.faces.data.aligned import align_folder
    >>> report = align_folder("photos", "aligned", "openface")             # doctest: +SKIP
    >>> report.summary()                                                   # doctest: +SKIP
    'aligned 4 photos of 3 people with openface -> aligned, skipped 1 without a face'
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ...data.aligners import NoSubject, every_subject, get
from ...data.errors import DataError, located
from ...data.images import open_image
from ...data.preprocessing import to_rgb
from .dataset import select_people
from .folder import scan_folder


@dataclass
class AlignReport:
    """What :func:`align_folder` wrote and what it skipped (paths relative to DIR)."""

    root: str
    out: str
    aligner: str
    every_face: bool = False
    photos: int = 0   # photos with a face written
    people: int = 0   # people with a photo written
    faces: int = 0    # files written (more than photos with every_face)
    no_face: list = field(default_factory=list)   # photos where the aligner found no face
    skipped: list = field(default_factory=list)   # [{"path", "reason"}]: files that are not readable images

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"aligned {self.photos} photos of {self.people} people with {self.aligner} -> {self.out}"
                + (f" ({self.faces} faces)" if self.every_face else "")
                + f", skipped {len(self.no_face)} without a face"
                + (f" and {len(self.skipped)} unreadable" if self.skipped else ""))

    def lines(self) -> list[str]:
        """Every file skipped, with why, in path order; then the summary."""
        reasons = [(s["path"], s["reason"]) for s in self.skipped] + [(p, "no face found") for p in self.no_face]
        return [f"skipped {path}: {why}" for path, why in sorted(reasons)] + [self.summary()]


def check_output_folder(root: "str | os.PathLike", out: "str | os.PathLike") -> None:
    """Refuse an output folder that is DIR or inside it: the aligned PNGs would join DIR's photos (and be scanned as
    its people by the next report, training or alignment)."""
    root_path, out_path = Path(root).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path == root_path:
        raise located("the output folder is DIR itself; write the aligned photos to another folder", out)
    if root_path in out_path.parents:
        raise located(f"the output folder is inside DIR ({root}); write the aligned photos to another folder", out)


def align_folder(root: "str | os.PathLike", out: "str | os.PathLike", aligner: "str | Callable", *,
                 every_face: bool = False, people: "str | os.PathLike | None" = None, min_images: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> AlignReport:
    """Write every photo of the face folder ``root`` (people selected as ``graphspec dataset`` does: a ``people``
    file, at least ``min_images`` photos) aligned by ``aligner`` (a name, or an aligner function) into ``out``.
    ``progress(done, total)`` is called after each photo."""
    name = aligner if isinstance(aligner, str) else getattr(aligner, "__name__", "aligner")
    align = get(aligner) if isinstance(aligner, str) else aligner
    check_output_folder(root, out)
    scan = scan_folder(root)
    files, persons = select_people(scan, people, min_images, warn=False)
    report = AlignReport(str(scan.root), str(out), name, every_face,
                         skipped=[{"path": s.path, "reason": s.reason} for s in scan.skipped])
    written_people = set()
    for done, (path, person) in enumerate(zip(files, persons), 1):
        chips = _subjects(path, align, name, report, f"{person}/{path.name}")
        if chips:
            chips = chips if every_face else chips[:1]
            _write(Path(out) / person, path.stem, chips)
            report.photos, report.faces = report.photos + 1, report.faces + len(chips)
            written_people.add(person)
        if progress is not None:
            progress(done, len(files))
    report.people = len(written_people)
    return report


def _subjects(path: Path, align: Callable, name: str, report: AlignReport, shown: str) -> list | None:
    """The aligner's faces of one photo, largest first; None (and the photo listed in ``report``) when it has no
    face or cannot be read. The aligner's own errors (e.g. dlib missing) stop the run: no photo would align."""
    try:
        with open_image(path) as image:  # a regular file within the decoding limits
            image.load()
            return every_subject(align, to_rgb(image), name)
    except NoSubject:
        report.no_face.append(shown)
    except DataError as e:
        if e.problem.location.file != str(path):  # the aligner's own errors (e.g. dlib missing)
            raise
        report.skipped.append({"path": shown, "reason": e.problem.message})
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        report.skipped.append({"path": shown, "reason": f"unreadable image: {e}"})
    return None


def _write(folder: Path, stem: str, chips: list) -> None:
    """``stem.png`` for the largest face, ``stem_face1.png``, ... for the others."""
    for k, chip in enumerate(chips):
        path = folder / (f"{stem}.png" if k == 0 else f"{stem}_face{k}.png")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            chip.save(path)
        except OSError as e:
            raise located(f"cannot write the aligned photo: {e.strerror or e}", path) from e
