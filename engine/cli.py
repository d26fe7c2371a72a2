"""The ``xptrain`` command line: train, evaluate, predict, plot, bench, info.

Every user error (bad option, missing or corrupt data, unusable device, unreadable
checkpoint) is one ``xptrain: error: ...`` line on stderr and exit status 2; a diverged run
exits 3, an interrupted one 130. Anything else is a bug and keeps its traceback (exit 1).
Set ``XPTRAIN_DEBUG=1`` to see the traceback of a user error too.
"""

import argparse
import json
import os
import sys
import time

from . import __version__
from .cli_args import (
    TRAIN_OPTIONS,
    data_options,
    non_negative_int,
    positive_int,
    train_parser,
)

EXIT_USER, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


def build_parser():
    parser = argparse.ArgumentParser(prog="xptrain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xptrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser(sub)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint, or an ensemble of several, on "
                       "the test set")
    e.add_argument("checkpoint", nargs="+", metavar="CHECKPOINT", help="one checkpoint, or "
                   "several: an ensemble that averages their probabilities")
    data_options(e)
    e.add_argument("--json", action="store_true")

    sub.add_parser("info", help="versions, devices, and which kernels are active")

    pl = sub.add_parser("plot", help="write the PNGs of a finished run (plot extra)")
    pl.add_argument("run_dir", help="a --out folder holding checkpoint.npz and history.json")
    pl.add_argument("--out", help="where to write the PNGs (default RUN_DIR/plots)")
    data_options(pl)

    pr = sub.add_parser("predict", help="top-3 classes for PNG/JPEG images or IDX files")
    pr.add_argument("checkpoint")
    pr.add_argument("files", nargs="+", metavar="FILE")
    pr.add_argument("--ensemble", action="append", default=[], metavar="CHECKPOINT",
                    help="another checkpoint whose probabilities are averaged with the first's "
                    "(repeat for more members)")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pr.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write a checkpoint's model as ONNX (onnx extra)")
    x.add_argument("checkpoint")
    x.add_argument("file", metavar="FILE.onnx")
    x.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")

    sv = sub.add_parser("serve", help="a drawing page and POST /predict for a checkpoint")
    sv.add_argument("checkpoint")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=non_negative_int, default=8000, help="default 8000")
    sv.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    sv.add_argument("--verbose", action="store_true", help="log every request on stderr")

    b = sub.add_parser("bench", help="throughput of every configuration beside PyTorch and "
                       "scikit-learn")
    b.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="auto adds the CUDA configurations when a GPU is usable")
    b.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1,
                   help="BLAS/OpenMP/torch threads for every contender (default: all cores)")
    b.add_argument("--repeats", type=positive_int, default=5, help="timed epochs per config")
    b.add_argument("--quick", action="store_true",
                   help="a 6,000-image subset, no memory or time-to-accuracy runs")
    b.add_argument("--json", metavar="FILE", help="write every figure and the environment")
    b.add_argument("--plot", metavar="FILE.png", help="scaling plot (needs the plot extra)")
    b.add_argument("--data-dir")
    b.add_argument("--no-download", action="store_true")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from . import parallel

    try:
        return _run(args, argv)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:  # a bug on one rank must end the job, not leave peers waiting
        if parallel.current().size > 1:
            import traceback

            traceback.print_exc()
            parallel.current().abort(1)
        raise


def _run(args, argv):
    from . import parallel
    from .commands import cmd_bench, cmd_export, cmd_plot, cmd_predict, cmd_serve
    from .errors import UserError
    from .train import TrainingDiverged, TrainingInterrupted

    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info,
                "bench": cmd_bench, "plot": cmd_plot, "predict": cmd_predict,
                "export": cmd_export, "serve": cmd_serve}
    if getattr(args, "workers", None) and args.workers > 1 and not parallel.launched_by_mpi():
        return parallel.relaunch(args.workers, _without_workers(argv))
    try:
        return handlers[args.command](args) or 0
    except TrainingInterrupted as exc:
        if parallel.current().rank == 0:  # every rank stopped at the same step
            print(f"xptrain: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        print(f"xptrain: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (UserError, OSError) as exc:
        # OSError: a file or folder the user named (unwritable --out, a full disk); any
        # other exception is a bug in xptrain and keeps its traceback
        if os.environ.get("XPTRAIN_DEBUG") or (isinstance(exc, OSError)
                                               and exc.filename is None):
            raise
        print(f"xptrain: error: {exc}", file=sys.stderr)
        if parallel.current().size > 1:  # the peers must not wait for this rank
            parallel.current().abort(EXIT_USER)
        return EXIT_USER
    except KeyboardInterrupt:
        print("xptrain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _without_workers(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def _logger(args):
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    if getattr(args, "quiet", False):
        return lambda msg: None
    return lambda msg: print(msg, file=stream, flush=True)


def given_options(args):
    """The training options given on the command line, as TrainConfig fields (with
    ``recipe`` when one was named)."""
    given = {field: getattr(args, dest) for dest, field in TRAIN_OPTIONS.items()
             if getattr(args, dest) is not None}
    if args.recipe is not None:
        given["recipe"] = args.recipe
    return given


def cmd_train(args):
    from . import parallel
    from .backend import select_backend
    from .data import load_mnist
    from .evaluate import describe_model
    from .metrics import format_per_class
    from .train import TrainConfig, Trainer

    rank = parallel.group().rank if parallel.launched_by_mpi() else 0
    log = _logger(args) if rank == 0 else (lambda msg: None)  # one voice: rank 0
    from .recipes import run_options

    given = given_options(args)
    values = run_options(given)
    TrainConfig(**values).validate()  # a bad value fails before any data is read
    backend = select_backend(args.device, tf32=args.tf32)
    log(f"device: {backend.describe()}")
    dataset = load_mnist(args.data_dir, download=not args.no_download,
                         progress=sys.stderr.isatty())
    log(f"data: {dataset.describe()}")
    progress = sys.stderr.isatty() and not args.quiet and rank == 0
    start = time.perf_counter()
    if args.resume:
        trainer = Trainer.resume(args.resume, dataset, backend, args.out, overrides=given,
                                 log=log, progress=progress)
        log(f"resuming {args.resume} at epoch {trainer.epoch + 1}, "
            f"step {trainer.step_in_epoch}, to epoch {trainer.config.epochs}")
    else:
        out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        trainer = Trainer(TrainConfig(**values), dataset, backend, out, log=log,
                          progress=progress)
    if args.plots:
        from .plots import pyplot

        pyplot()  # say what to install before training, not after
    c = trainer.config
    log(f"model: {describe_model(trainer.model.spec())}, "
        f"{trainer.model.n_params:,} parameters; {c.optimizer} lr {c.lr} "
        f"{c.schedule}, batch {c.batch_size}, {c.epochs} epochs, kernels {trainer.ops.name}")
    history = trainer.fit()
    test_loss, conf = trainer.evaluate(trainer.data.x_test, trainer.data.y_test)
    summary = _summary(trainer, history, test_loss, conf, time.perf_counter() - start)
    trainer.save()
    log(format_per_class(conf))
    log(f"test accuracy {summary['test_accuracy'] * 100:.2f}%  test loss {test_loss:.4f}  "
        f"train time {summary['seconds']:.1f}s  {summary['samples_per_second'] or 0:,.0f} "
        f"samples/s  checkpoint {trainer.checkpoint_path}")
    if args.plots and rank == 0:
        from .commands import write_plots

        paths = write_plots(trainer.model, history, dataset, args.plots)
        log(f"plots: {', '.join(str(p) for p in paths)}")
    if args.json and rank == 0:
        print(json.dumps(summary))
    return 0


def _summary(trainer, history, test_loss, conf, wall):
    from .metrics import accuracy, per_class_accuracy

    seconds = sum(row["seconds"] for row in history)
    samples = sum(row["samples_per_second"] * row["seconds"] for row in history
                  if row["samples_per_second"])
    return {"test_accuracy": accuracy(conf), "test_loss": test_loss, "epochs": len(history),
            "seconds": seconds, "wall_seconds": wall,
            "samples_per_second": samples / seconds if seconds else None,
            "device": trainer.backend.name, "device_name": trainer.backend.device_name,
            "kernels": trainer.ops.name, "ranks": trainer.group.size,
            "allreduce_seconds_per_step": (trainer.reduce.seconds / trainer.reduce.calls
                                           if trainer.reduce and trainer.reduce.calls
                                           else None),
            "per_class_accuracy": [float(a) for a in per_class_accuracy(conf)],
            "checkpoint": str(trainer.checkpoint_path) if trainer.checkpoint_path else None,
            "history": history}


def cmd_evaluate(args):
    from .evaluate import evaluate_checkpoint, format_bands
    from .metrics import format_per_class

    result, conf = evaluate_checkpoint(args.checkpoint, args.device, args.data_dir,
                                       download=not args.no_download)
    if args.json:
        print(json.dumps(result))
        return 0
    if len(args.checkpoint) == 1:
        print(f"{args.checkpoint[0]}: {result['model']} on {result['device']}")
    else:
        print(f"ensemble of {len(args.checkpoint)} on {result['device']} (mean probability):")
        for m in result["members"]:
            print(f"  {m['checkpoint']}: test accuracy {m['test_accuracy'] * 100:.2f}%  "
                  f"test loss {m['test_loss']:.4f}")
    print(format_per_class(conf))
    print(format_bands(result["confidence_bands"]))
    print(f"test accuracy {result['test_accuracy'] * 100:.2f}%  test loss "
          f"{result['test_loss']:.4f}  ({result['n_samples']} images)")
    return 0


def cmd_info(args):
    from .info import collect

    for key, value in collect().items():
        print(f"{key + ':':<22}{value}")
    return 0
