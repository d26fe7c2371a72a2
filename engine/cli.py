"""The ``xptrain`` command line: train, evaluate, info.

Every user error (bad option, missing or corrupt data, unusable device, unreadable
checkpoint) is one ``xptrain: error: ...`` line on stderr and a non-zero exit.
Set ``XPTRAIN_DEBUG=1`` to see the traceback instead.
"""

import argparse
import json
import os
import sys
import time

from . import __version__

EXIT_USER, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _float(low, high=None, low_open=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (value > low if low_open else value >= low) and (high is None or value < high)
        if not ok or value != value:
            rng = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high else "")
            raise argparse.ArgumentTypeError(f"expected a number {rng}, got {text!r}")
        return value
    return parse


def _hidden(text):
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths like 512 or 512,256, got {text!r}")
    return sizes


def build_parser():
    from .config import ZERO_COLUMNS
    from .optim import OPTIMIZERS, SCHEDULES
    from .train import TrainConfig

    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="xptrain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xptrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP on MNIST (or any MNIST-format IDX folder)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--epochs", type=_positive_int, default=d.epochs)
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    t.add_argument("--lr", type=_float(0, low_open=True), default=d.lr, help="peak learning rate")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    t.add_argument("--momentum", type=_float(0, 1), default=d.momentum, help="SGD momentum")
    t.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    t.add_argument("--weight-decay", type=_float(0), default=d.weight_decay)
    t.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    t.add_argument("--warmup", type=_float(0), default=d.warmup_epochs,
                   help="linear warm-up length in epochs (may be fractional)")
    t.add_argument("--step-epochs", type=_positive_int, default=d.step_epochs,
                   help="step schedule: decay every this many epochs")
    t.add_argument("--gamma", type=_float(0, low_open=True), default=d.gamma,
                   help="step schedule: decay factor")
    t.add_argument("--model", default=d.model,
                   help='"mlp" (default, sized by --hidden), "cnn" (conv32-pool-conv64-pool-'
                   'fc128) or a layer spec such as conv16-pool-fc64 (convF[kK][sS][pP], '
                   'pool[K][sS], fcN, dropP)')
    t.add_argument("--hidden", type=_hidden, default=d.hidden,
                   help="hidden layer widths, comma-separated (default %(default)s)")
    t.add_argument("--activation", choices=("relu", "sigmoid", "tanh"), default=d.activation)
    t.add_argument("--dropout", type=_float(0, 1), default=d.dropout)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--val-fraction", type=_float(0, 1), default=0.0,
                   help="hold out this fraction of the training set for validation")
    t.add_argument("--kernels", choices=("fused", "reference"), default=d.kernels)
    t.add_argument("--zero-columns", choices=ZERO_COLUMNS, default=d.zero_columns,
                   help="skip the input columns that are zero in a whole batch in the first "
                   "layer's products (same result, fewer FLOPs), or read them all; auto "
                   "(default): skip on the CPU, read on a GPU")
    t.add_argument("--tf32", action="store_true",
                   help="TF32 matrix products on CUDA (compute capability >= 8.0; changes "
                   "numerics, off by default)")
    t.add_argument("--data-dir", help="folder with the four MNIST IDX files (raw or .gz)")
    t.add_argument("--out", help="output folder for checkpoint.npz and history.json "
                   "(default runs/<date-time>)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue an interrupted run")
    t.add_argument("--no-download", action="store_true", help="never download data")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")
    t.add_argument("--json", action="store_true",
                   help="print one final JSON object on stdout (logs go to stderr)")
    t.add_argument("--plots", metavar="DIR", help="write learning curves, confusion matrix, "
                   "predictions, mistakes and first-layer weights as PNGs (plot extra)")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on the test set")
    e.add_argument("checkpoint")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.add_argument("--data-dir")
    e.add_argument("--no-download", action="store_true")
    e.add_argument("--json", action="store_true")

    sub.add_parser("info", help="versions, devices, and which kernels are active")

    pl = sub.add_parser("plot", help="write the PNGs of a finished run (plot extra)")
    pl.add_argument("run_dir", help="a --out folder holding checkpoint.npz and history.json")
    pl.add_argument("--out", help="where to write the PNGs (default RUN_DIR/plots)")
    pl.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pl.add_argument("--data-dir")
    pl.add_argument("--no-download", action="store_true")

    pr = sub.add_parser("predict", help="top-3 classes for PNG/JPEG images or IDX files")
    pr.add_argument("checkpoint")
    pr.add_argument("files", nargs="+", metavar="FILE")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    pr.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="throughput of every configuration beside PyTorch and "
                       "scikit-learn")
    b.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="auto adds the CUDA configurations when a GPU is usable")
    b.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1,
                   help="BLAS/OpenMP/torch threads for every contender (default: all cores)")
    b.add_argument("--repeats", type=_positive_int, default=5, help="timed epochs per config")
    b.add_argument("--quick", action="store_true",
                   help="a 6,000-image subset, no memory or time-to-accuracy runs")
    b.add_argument("--json", metavar="FILE", help="write every figure and the environment")
    b.add_argument("--plot", metavar="FILE.png", help="scaling plot (needs the plot extra)")
    b.add_argument("--data-dir")
    b.add_argument("--no-download", action="store_true")
    b.add_argument("--memory-probe", help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .backend import BackendError
    from .checkpoint import CheckpointError
    from .data import DataError
    from .plots import PlotUnavailable
    from .train import TrainingDiverged, TrainingInterrupted

    from .commands import cmd_bench, cmd_plot, cmd_predict

    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "info": cmd_info,
                "bench": cmd_bench, "plot": cmd_plot, "predict": cmd_predict}
    try:
        return handlers[args.command](args) or 0
    except TrainingInterrupted as exc:
        print(f"xptrain: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        print(f"xptrain: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (BackendError, CheckpointError, DataError, PlotUnavailable, ValueError,
            OSError) as exc:
        if os.environ.get("XPTRAIN_DEBUG"):
            raise
        print(f"xptrain: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("xptrain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _logger(args):
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    if getattr(args, "quiet", False):
        return lambda msg: None
    return lambda msg: print(msg, file=stream, flush=True)


def cmd_train(args):
    from .backend import enable_tf32, select_backend
    from .data import load_mnist
    from .metrics import format_per_class
    from .train import TrainConfig, Trainer

    log = _logger(args)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_epochs=args.warmup, step_epochs=args.step_epochs,
        gamma=args.gamma, model=args.model, hidden=args.hidden, activation=args.activation,
        dropout=args.dropout, seed=args.seed, val_fraction=args.val_fraction,
        kernels=args.kernels, zero_columns=args.zero_columns).validate()
    enable_tf32(args.tf32)
    backend = select_backend(args.device)
    log(f"device: {backend.describe()}" + (" (TF32 on)" if args.tf32 else ""))
    dataset = load_mnist(args.data_dir, download=not args.no_download,
                         progress=sys.stderr.isatty())
    log(f"data: {dataset.describe()}")
    progress = sys.stderr.isatty() and not args.quiet
    start = time.perf_counter()
    if args.resume:
        trainer = Trainer.resume(args.resume, dataset, backend, args.out, log=log,
                                 progress=progress)
        log(f"resuming {args.resume} at epoch {trainer.epoch + 1}, "
            f"step {trainer.step_in_epoch}")
    else:
        out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        trainer = Trainer(config, dataset, backend, out, log=log, progress=progress)
    if args.plots:
        from .plots import pyplot

        pyplot()  # say what to install before training, not after
    c = trainer.config
    from .evaluate import describe_model

    log(f"model: {describe_model(trainer.model.spec())}, "
        f"{trainer.model.n_params:,} parameters; {c.optimizer} lr {c.lr} "
        f"{c.schedule}, batch {c.batch_size}, {c.epochs} epochs, kernels {c.kernels}")
    history = trainer.fit()
    test_loss, conf = trainer.evaluate(trainer.x_test, trainer.y_test)
    summary = _summary(trainer, history, test_loss, conf, time.perf_counter() - start)
    trainer.save()
    log(format_per_class(conf))
    log(f"test accuracy {summary['test_accuracy'] * 100:.2f}%  test loss {test_loss:.4f}  "
        f"train time {summary['seconds']:.1f}s  {summary['samples_per_second']:,.0f} samples/s"
        f"  checkpoint {trainer.checkpoint_path}")
    if args.plots:
        from .commands import write_plots

        paths = write_plots(trainer.model, history, dataset, args.plots)
        log(f"plots: {', '.join(str(p) for p in paths)}")
    if args.json:
        print(json.dumps(summary))
    return 0


def _summary(trainer, history, test_loss, conf, wall):
    from .metrics import accuracy, per_class_accuracy

    seconds = sum(row["seconds"] for row in history)
    samples = trainer.n_train * len(history)
    return {"test_accuracy": accuracy(conf), "test_loss": test_loss, "epochs": len(history),
            "seconds": seconds, "wall_seconds": wall,
            "samples_per_second": samples / seconds if seconds else None,
            "device": trainer.backend.name, "device_name": trainer.backend.device_name,
            "kernels": trainer.config.kernels,
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
    print(f"{args.checkpoint}: {result['model']} on {result['device']}")
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
