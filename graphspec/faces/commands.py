"""The face application's commands: ``train`` on face folders, ``embed`` photos, ``verify`` on pair protocols,
``dataset``. Registered on the main command line by :func:`register`."""
from __future__ import annotations

import json

from ..cli.common import console, execution, execution_flags, finite_float, positive
from ..log import logger
from ..opening import open
from ..text import printable


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc-per-node":
            skip = True
        elif not a.startswith("--nproc-per-node="):
            out.append(a)
    return out


def cmd_train(args) -> int:
    from ..train import distributed
    from .training import train
    nproc = args.nproc_per_node or distributed.processes_for(args.device)
    if nproc > 1 and not distributed.under_launcher():
        return distributed.launch(_without_nproc(args.argv), nproc)
    ctx = distributed.init_from_env(args.device)
    ok = False
    try:
        result = _train(args, train, ctx)
        ok = True
        return result
    finally:
        distributed.shutdown(ok)


def _train(args, train, ctx) -> int:
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                 "semantics": args.semantics, "print_every": args.print_every, "data.limit": args.limit,
                 "max_minutes": args.max_minutes,
                 "data.people": args.people, "data.min_images": args.min_images,
                 "data.eval_fraction": args.eval_fraction, "data.dl4j": True if args.dl4j_data else None,
                 "sync_batchnorm": True if args.sync_bn else None, "precision": args.precision,
                 "channels_last": {"on": True, "off": False}.get(args.channels_last),
                 "keep_best": args.keep_best, "early_stop": args.early_stop,
                 "early_stop_metric": args.early_stop_metric, "log": _loggers(args.log)}
    trainer = train(args.spec, data=args.data, recipe_path=args.recipe, out=args.out, resume=args.resume,
                    overwrite=args.overwrite, overrides=overrides,
                    console=console() if ctx.is_main and not args.quiet else None, ctx=ctx)
    metrics = trainer.evaluate() if trainer.eval_data is not None else {}
    if metrics:
        print("evaluation: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in metrics.items()))
    return 0


def _loggers(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def cmd_embed(args) -> int:
    from .embed import check_output, image_files, write
    check_output(args.out)
    files = image_files(args.paths)
    model = _open_face_model(args, args.output)
    # rows holding NaN or infinity are written as computed, with a warning (identify/cluster/verify refuse them)
    rows, done = _embeddings(model, files, args, "embedding", args.every_face, args.output, non_finite="warn")
    written = write(rows, done, args.out)
    print(f"embedded {_counted(done, args.every_face)} ({rows.shape[1] if rows.size else 0} values each) -> "
          + ", ".join(map(str, written)))
    return 0


def _counted(done, every_face: bool, noun: str = "images") -> str:
    """``3 images``, or with --every-face ``5 faces of 3 photos``."""
    if not every_face:
        return f"{len(done)} {noun}"
    from .embed import face_photo
    return f"{len(done)} faces of {len({face_photo(name)[0] for name in done})} photos"


def cmd_verify(args) -> int:
    from rich.progress import Progress
    from .embed import embedding_warnings
    from .verify.scoring import check_plotting, plot_roc, verify
    if args.plot:
        check_plotting()
    model = open(args.model)
    for note in embedding_warnings(model):
        logger.warning(note)
    with Progress(console=console(stderr=True), transient=True, disable=args.quiet) as bar:
        task = bar.add_task("embedding pairs", total=None)
        report, d, same = verify(model, args.data, args.pairs, train_pairs=args.train_pairs,
                                 threshold=args.threshold, metric=args.metric,
                                 flip=args.flip, batch_size=args.batch_size,
                                 progress=lambda n: bar.update(task, completed=n), execution=execution(args))
    if args.plot:
        plot_roc(d, same, report, args.plot)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0



def _embeddings(model, files, args, what: str, every_face: bool = False, output: str | None = None,
                non_finite: str = "refuse"):
    """Rows for ``files`` (vertex ``output``, default the model's output; the recorded preprocessing; with
    ``every_face`` a row per face, named ``photo#k``), with a progress bar; skipped files are reported."""
    from rich.progress import Progress
    from .embed import embed
    with Progress(console=console(stderr=True), transient=True, disable=args.quiet) as bar:
        task = bar.add_task(what, total=len(files))
        rows, done, skipped = embed(model, files, output=output, batch_size=args.batch_size, flip=args.flip,
                                    progress=lambda n: bar.update(task, completed=n), execution=execution(args),
                                    every_face=every_face, non_finite=non_finite)
    for path, reason in skipped:
        logger.warning(f"skipped {path}: {reason}")
    return rows, done


def _open_face_model(args, output: str | None = None):
    """The model, refused now (before any photo is read) when --every-face is asked of a model that does not
    align; its warnings (about vertex ``output``) are printed."""
    from .embed import check_every_face, embedding_warnings
    model = open(args.model)
    if args.every_face:
        check_every_face(model, args.model, args.aligned)
    for note in embedding_warnings(model, output):
        logger.warning(note)
    return model


def cmd_identify(args) -> int:
    from .embed import image_files
    from .identify import gallery_of, identify, write_matches
    gallery_files, names = gallery_of(args.gallery)
    probes = image_files(args.photos)
    model = _open_face_model(args)
    # the gallery: one known face per photo, its largest; --every-face asks about every face of the photos
    known, kept = _embeddings(model, gallery_files, args, "embedding the gallery")
    kept_names = [n for f, n in zip(gallery_files, names) if f in set(kept)]
    rows, done = _embeddings(model, probes, args, "embedding the photos", args.every_face)
    matches = identify(rows, known, kept_names, [str(f) for f in done], args.threshold, args.metric)
    if args.out:
        print(f"wrote {write_matches(matches, args.out)}")
    for m in matches:
        path, name, nearest = printable(m.path), printable(m.name), printable(m.nearest)  # names from folders
        print(f"{path}\t{name}\t{m.distance:.4f}" + ("" if m.name == m.nearest else f"\t(nearest: {nearest})"))
    return 0


def cmd_cluster(args) -> int:
    from .embed import image_files
    from .identify import chinese_whispers, contact_sheets, write_clusters
    files = image_files(args.photos)
    model = _open_face_model(args)
    rows, done = _embeddings(model, files, args, "embedding", args.every_face)
    labels = chinese_whispers(rows, args.threshold, args.metric, seed=args.seed)
    written = write_clusters(labels, done, args.out)
    import numpy as np
    many = int((np.bincount(labels) >= 2).sum()) if len(labels) else 0
    print(f"{_counted(done, args.every_face, 'photos')} in {len(set(labels.tolist()))} clusters ({many} with two or "
          f"more) -> {written}")
    if args.sheets:
        sheets = contact_sheets(labels, done, args.sheets, picture=_face_picture(model) if args.every_face else None)
        print(f"contact sheets: {len(sheets)} in {args.sheets}")
    return 0


def _face_picture(model):
    """A contact sheet's picture of a face name: the aligned face, as the model saw it before its crop and resize."""
    from ..execution import preprocessing_of
    from .embed import face_image
    prep = preprocessing_of(model)
    return lambda name: face_image(prep, name)


EVERY_FACE_HELP = "a row for every face of a photo, named photo.jpg#k (0 = the largest), not only the largest face"


def _face_model_flags(p) -> None:
    p.add_argument("--model", default="nn4small2-lfw", help="a model file or a shipped model (default: nn4small2-lfw)")
    p.add_argument("--threshold", type=finite_float, required=True,
                   help="the verification threshold of the model (its card: 0.116 for nn4small2-lfw, squared L2)")
    p.add_argument("--metric", choices=("sqeuclidean", "cosine"), default="sqeuclidean")
    p.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--every-face", action="store_true", help=EVERY_FACE_HELP + " (needs a model that aligns)")
    execution_flags(p)


def register(sub) -> None:
    """Add the face commands to the main command line's subparsers."""
    e = sub.add_parser("embed", help="feed images through a model and write one row per image")
    e.add_argument("model", help="a model file (or a spec: fresh weights)")
    e.add_argument("paths", nargs="+", help="image files or folders")
    e.add_argument("-o", "--out", required=True, help="embeddings.npy (+ .paths.txt) or embeddings.csv")
    e.add_argument("--output", help="vertex to read (default: the model's output)")
    e.add_argument("--batch-size", type=positive, default=64)
    e.add_argument("--flip", action="store_true", help="average with the mirrored image")
    e.add_argument("--every-face", action="store_true", help=EVERY_FACE_HELP + " (needs a model that aligns)")
    execution_flags(e)
    e.set_defaults(func=cmd_embed)

    idf = sub.add_parser("identify", help="name the people in photos from a gallery of known people")
    idf.add_argument("photos", nargs="+", help="image files or folders")
    idf.add_argument("--gallery", required=True, help="a folder with one sub-folder of photos per known person")
    idf.add_argument("-o", "--out", help="also write the answers to this .csv or .json")
    _face_model_flags(idf)
    idf.set_defaults(func=cmd_identify)

    cl = sub.add_parser("cluster", help="group a photo collection by identity (Chinese whispers)")
    cl.add_argument("photos", nargs="+", help="image files or folders")
    cl.add_argument("-o", "--out", required=True, help="clusters.csv: path, cluster (0 = the largest)")
    cl.add_argument("--sheets", help="write a contact sheet per cluster of two or more photos into this folder")
    cl.add_argument("--seed", type=int, default=0, help="the order Chinese whispers visits the photos in")
    _face_model_flags(cl)
    cl.set_defaults(func=cmd_cluster)

    vf = sub.add_parser("verify", help="face verification accuracy on a pairs protocol (LFW View 1 / View 2)")
    vf.add_argument("model", help="a model file or the name of a model shipped with graphspec")
    vf.add_argument("--data", required=True, help="LFW image folder (NAME/NAME_0001.jpg) or its parent")
    vf.add_argument("--pairs", required=True, help="pairs file: pairsDevTest.txt (View 1) or pairs.txt (View 2)")
    vf.add_argument("--train-pairs", help="View 1: choose the threshold on these pairs (e.g. pairsDevTrain.txt)")
    vf.add_argument("--threshold", type=finite_float, help="a fixed threshold (e.g. a model card's) instead of choosing one")
    vf.add_argument("--metric", choices=("sqeuclidean", "cosine"), default="sqeuclidean")
    vf.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    vf.add_argument("--batch-size", type=positive, default=64)
    vf.add_argument("--format", choices=("text", "json"), default="text")
    vf.add_argument("--plot", help="write the ROC curve to this PNG (needs matplotlib)")
    execution_flags(vf)
    vf.set_defaults(func=cmd_verify)

    t = sub.add_parser("train", help="train a spec (or model file) on a face folder or the synthetic set")
    t.add_argument("spec", nargs="?", help="a spec, a model file or a catalogued model (omit with --resume)")
    t.add_argument("--data", help="folder in LFW layout (NAME/NAME_0001.jpg), 'synthetic', or an .npz file of "
                                  "arrays named after the spec's inputs and outputs (any spec) "
                                  "(default: the LFW folder if found, else synthetic)")
    t.add_argument("--recipe", help="recipe YAML (data, preprocessing, augmentation, optimizer, schedule)")
    t.add_argument("--out", help="run directory (checkpoints, metrics.jsonl, model.safetensors)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="start a new run in an --out that holds another run "
                                                            "(its files are removed first)")
    t.add_argument("--epochs", type=positive)
    t.add_argument("--batch-size", type=positive)
    t.add_argument("--limit", type=positive, help="use at most N images")
    t.add_argument("--seed", type=int)
    t.add_argument("--semantics", choices=("dl4j", "pytorch"))
    t.add_argument("--people", help="official people file (e.g. peopleDevTrain.txt) restricting identities")
    t.add_argument("--min-images", type=positive, help="keep people with at least N images")
    t.add_argument("--eval-fraction", type=float, help="fraction of images held out for evaluation")
    t.add_argument("--dl4j-data", action="store_true", help="DL4J LFWDataSetIterator selection (one image/person)")
    t.add_argument("--print-every", type=positive, help="score line every N iterations (default 1)")
    t.add_argument("--max-minutes", type=float, help="stop after this much training time, with a checkpoint and the "
                                                     "final model (the recipe's max_minutes)")
    t.add_argument("--nproc-per-node", type=positive,
                   help="train in N processes on this machine (DistributedDataParallel; also works under torchrun); "
                        "default: one per GPU when --device is auto or cuda, else 1")
    t.add_argument("--sync-bn", action="store_true", help="distributed: batch-norm statistics over all processes")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="bf16: bfloat16 autocast forward (float32 weights and updates; fast on AVX512-BF16 CPUs and "
                        "GPUs); fp16: float16 autocast with a gradient scaler (CUDA)")
    t.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:N or mps")
    t.add_argument("--channels-last", choices=("on", "off"),
                   help="NHWC memory format (default: on for image inputs; faster convolutions on CPUs)")
    t.add_argument("--log", metavar="LOGGERS", help="also log to csv and/or tensorboard in the run directory "
                                                   "(comma-separated; tensorboard needs the tensorboard extra)")
    t.add_argument("--keep-best", metavar="METRIC", help="write best.safetensors whenever METRIC improves "
                                                         "(accuracy, loss, mse, ... on held-out data, or score)")
    t.add_argument("--early-stop", metavar="PATIENCE", type=positive,
                   help="stop after PATIENCE evaluations without improvement (of --keep-best's metric, else score)")
    t.add_argument("--early-stop-metric", metavar="METRIC", help="the metric --early-stop watches")
    t.set_defaults(func=cmd_train)

    from .data.command import register_cli as register_dataset
    register_dataset(sub)
