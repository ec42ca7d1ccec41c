"""``graphspec dataset``: report on a face folder; optionally download LFW or write the synthetic set first; or
write it again aligned (``--align NAME -o OUT``).

Wired into the main command line by ``graphspec.faces.data.command.register_cli(subparsers)``. User errors are
:class:`graphspec.errors.GraphspecError`, which the main command line prints as ``FILE:LINE:COL: message``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ...errors import GraphspecError
from ...text import printable
from ...data.errors import DataError

EPILOG = """examples:
  graphspec dataset ../shared/data/lfw --people peopleDevTrain.txt --min-images 2
  graphspec dataset ~/lfw --download                  # fetch lfw-deepfunneled.tgz (md5-checked) if ~/lfw is missing
  graphspec dataset faces/ --synthetic 10x20 --seed 0 # write the built-in synthetic set, then report
  graphspec dataset ~/lfw --align openface -o ~/lfw-openface  # every photo's largest face, OpenFace's 96x96 chip
"""


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``dataset`` subcommand to an argparse ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser("dataset", help="report identities, images and skipped files of a face folder",
                              description=__doc__.splitlines()[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="folder in LFW layout: DIR/NAME/NAME_0001.jpg")
    p.add_argument("--people", metavar="FILE", help="a people file (e.g. peopleDevTrain.txt) selecting people")
    p.add_argument("--min-images", metavar="N", type=_positive, default=1, help="keep people with >= N images")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--verify", action="store_true", help="decode every image (slower; finds corrupt files)")
    g = p.add_argument_group("creating DIR")
    g.add_argument("--download", action="store_true", help="download LFW into DIR if DIR is missing or empty")
    g.add_argument("--variant", default="deepfunneled", help="deepfunneled (default), original or funneled")
    g.add_argument("--url", help="archive URL (a mirror); needs --checksum")
    g.add_argument("--checksum", help="md5:HEX or sha256:HEX ('' to skip verification of a custom --url)")
    g.add_argument("--synthetic", metavar="IxM", type=_shape, help="write I identities x M images into DIR")
    g.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    g.add_argument("--cache-dir", help="where downloads go (default $GRAPHSPEC_CACHE or ~/.cache/graphspec)")
    a = p.add_argument_group("aligning DIR (instead of the report)")
    a.add_argument("--align", metavar="NAME", help="write every photo's largest face, aligned by this aligner (e.g. "
                                                   "dlib-5pt, openface), into -o OUT as OUT/NAME/NAME_0001.png")
    a.add_argument("-o", "--out", metavar="OUT", help="the folder --align writes (not DIR, nor inside it)")
    a.add_argument("--every-face", action="store_true",
                   help="--align: also the other faces of a photo, as NAME_0001_face1.png, ... by decreasing size")
    p.set_defaults(func=cmd_dataset)
    return p


def cmd_dataset(args) -> int:
    from .report import dataset_report, render_text
    root = Path(args.dir)
    if args.synthetic and args.download:
        raise DataError("--synthetic and --download both create DIR; choose one")
    _check_align(args)
    if args.synthetic:
        from .synthetic import synthetic_faces
        synthetic_faces(root, identities=args.synthetic[0], images=args.synthetic[1], seed=args.seed)
    elif args.download and not (root.is_dir() and any(root.iterdir())):
        _download(args, root)
    if args.align:
        return _align(args, root)
    report = dataset_report(root, people=args.people, min_images=args.min_images, verify=args.verify)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render_text(report, _console())
    return 0


def _check_align(args) -> None:
    """Refuse a misused --align now, before DIR is created, scanned or read."""
    if args.align is None:
        if args.out is not None or args.every_face:
            raise DataError("-o and --every-face go with --align NAME (the aligner to use)")
        return
    if args.out is None:
        raise DataError("--align needs -o OUT, the folder to write the aligned photos into")
    from ...data.aligners import get
    from .aligned import check_output_folder
    get(args.align)  # an unknown name: the error lists the installed aligners
    check_output_folder(args.dir, args.out)


def _align(args, root: Path) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from .aligned import align_folder
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"aligning ({args.align})", total=None)
        report = align_folder(root, args.out, args.align, every_face=args.every_face, people=args.people,
                              min_images=args.min_images,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    lines = map(printable, report.lines())  # they quote paths and folder names
    print(json.dumps(report.to_dict(), indent=2) if args.format == "json" else "\n".join(lines))
    return 0


def _download(args, root: Path) -> None:
    from .download import download_lfw
    shown = [-1]

    def progress(done: int, total):
        mib = done >> 20
        if mib != shown[0] and (mib % 16 == 0 or done == total):
            shown[0] = mib
            print(f"\rdownloading: {mib} MiB" + (f" of {total >> 20} MiB" if total else ""), end="",
                  file=sys.stderr, flush=True)

    download_lfw(root, variant=args.variant, url=args.url, checksum=args.checksum, cache_dir=args.cache_dir,
                 progress=progress)
    print(file=sys.stderr)


def _console():
    from rich.console import Console
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; received '{text}'")
    return int(text)


def _shape(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise argparse.ArgumentTypeError(f"expected IDENTITIESxIMAGES such as 10x20; received '{text}'")
    return int(m[1]), int(m[2])


def main(argv=None) -> int:
    """Run ``dataset`` on its own (``python -m graphspec.faces.data.command DIR ...``), printing errors like the main CLI."""
    parser = argparse.ArgumentParser(prog="graphspec")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dataset", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except GraphspecError as e:
        print(f"error: {e.problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
