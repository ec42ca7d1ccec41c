"""What a face folder holds, as plain data (rendered by ``graphspec dataset`` as a table or JSON).

    >>> from graphspec.data import dataset_report
    >>> r = dataset_report("lfw", people="peopleDevTrain.txt", min_images=2)   # doctest: +SKIP
    >>> r.identities, r.images                                                 # doctest: +SKIP
    (1184, 6671)
"""
from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field

from ...text import markup_safe, printable
from .folder import Skipped, scan_folder, verify_images
from .protocol import read_people

#: Histogram buckets of images per person: (label, low, high inclusive).
BUCKETS = [("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-9", 5, 9), ("10-19", 10, 19), ("20-49", 20, 49),
           ("50+", 50, 10**9)]


@dataclass
class DatasetReport:
    """Identities, images, the per-person distribution and every file skipped, with why."""

    root: str
    identities: int
    images: int
    min_images: int = 1
    people_file: str | None = None
    per_person: dict = field(default_factory=dict)   # min, median, mean, max
    histogram: list = field(default_factory=list)    # [{"images": "3-4", "people": n, "total": m}]
    largest: list = field(default_factory=list)      # [[name, count]] the 10 largest
    skipped: list = field(default_factory=list)      # [{"path", "reason"}]
    empty_folders: list = field(default_factory=list)
    missing_people: list = field(default_factory=list)   # in the people file, not in the folder
    count_mismatches: list = field(default_factory=list)  # [[name, listed, found]]
    verified: bool = False  # every counted image was fully decoded

    def to_dict(self) -> dict:
        return asdict(self)


def dataset_report(root: "str | os.PathLike", *, people: "str | os.PathLike | None" = None, min_images: int = 1,
                   verify: bool = False, workers: int | None = None) -> DatasetReport:
    """Scan ``root`` (cheap checks; ``verify`` also decodes every selected image) and summarise it."""
    scan = scan_folder(root)
    counts = {name: list(files) for name, files in scan.images.items()}
    skipped = list(scan.skipped)
    if verify:
        skipped += _verify(scan, counts, workers)
    report = DatasetReport(str(scan.root), 0, 0, min_images=min_images, skipped=[], verified=verify,
                           empty_folders=list(scan.empty_folders))
    if people is not None:
        listed = {p.name: p.images for p in read_people(people)}
        report.people_file = str(people)
        report.missing_people = sorted(set(listed) - set(counts))
        report.count_mismatches = [[n, listed[n], len(counts[n])] for n in sorted(set(listed) & set(counts))
                                   if listed[n] != len(counts[n])]
        counts = {n: f for n, f in counts.items() if n in listed}
    sizes = {n: len(f) for n, f in counts.items() if len(f) >= min_images}
    report.identities, report.images = len(sizes), sum(sizes.values())
    report.skipped = [{"path": s.path, "reason": s.reason} for s in skipped]
    _distribution(report, sizes)
    return report


def _verify(scan, counts: dict, workers) -> list[Skipped]:
    flat = [(n, f) for n in sorted(counts) for f in counts[n]]
    failures = verify_images([scan.path(n, f) for n, f in flat], workers)
    for i in sorted(failures, reverse=True):
        name, file = flat[i]
        counts[name].remove(file)
    return [Skipped(f"{flat[i][0]}/{flat[i][1]}", why) for i, why in sorted(failures.items())]


def _distribution(report: DatasetReport, sizes: dict[str, int]) -> None:
    values = sorted(sizes.values())
    if values:
        report.per_person = {"min": values[0], "median": statistics.median(values),
                             "mean": round(sum(values) / len(values), 3), "max": values[-1]}
    for label, lo, hi in BUCKETS:
        inside = [v for v in values if lo <= v <= hi]
        if inside:
            report.histogram.append({"images": label, "people": len(inside), "total": sum(inside)})
    report.largest = [[n, c] for n, c in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]


def render_text(report: DatasetReport, console) -> None:
    """The report as rich tables on ``console``."""
    from rich.table import Table
    console.print(f"[bold]{markup_safe(report.root)}[/bold]: {report.identities:,} identities, {report.images:,} images"
                  + (f" (people file {markup_safe(report.people_file)})" if report.people_file else "")
                  + (f", at least {report.min_images} images each" if report.min_images > 1 else "")
                  + (", every image decoded" if report.verified else ""))
    if report.per_person:
        p = report.per_person
        console.print(f"images per person: min {p['min']}, median {p['median']:g}, mean {p['mean']:g}, "
                      f"max {p['max']}")
        table = Table("images per person", "people", "images", title="distribution")
        for row in report.histogram:
            table.add_row(row["images"], f"{row['people']:,}", f"{row['total']:,}")
        console.print(table)
        console.print("largest: " + ", ".join(f"{markup_safe(n)} ({c})" for n, c in report.largest))
    _render_problems(report, console)


def _render_problems(report: DatasetReport, console) -> None:
    if report.missing_people:
        console.print(f"{len(report.missing_people)} people of the people file have no images: "
                      + ", ".join(map(markup_safe, report.missing_people[:20]))
                      + (" ..." if len(report.missing_people) > 20 else ""))
    for name, listed, found in report.count_mismatches:
        console.print(f"{markup_safe(name)}: the people file lists {listed} images, the folder has {found}")
    if report.empty_folders:
        console.print(f"ignored {len(report.empty_folders)} empty folder(s): "
                      + ", ".join(map(markup_safe, report.empty_folders)))
    console.print(f"skipped {len(report.skipped)} file(s)" + (":" if report.skipped else ""))
    for s in report.skipped:
        console.print(f"  {printable(s['path'])}: {printable(s['reason'])}", markup=False, highlight=False)
