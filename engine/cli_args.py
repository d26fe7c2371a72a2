"""The ``xptrain`` command line's argument types and the ``train`` command's options (the
largest parser, kept beside its validators; :mod:`.cli` builds the rest)."""

import argparse


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def number(low, high=None, low_open=False):
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


def hidden(text):
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths like 512 or 512,256, got {text!r}")
    return sizes


# Training options: parsed with default None, so a resumed run knows what was asked for.
TRAIN_OPTIONS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                 "optimizer": "optimizer", "momentum": "momentum", "nesterov": "nesterov",
                 "weight_decay": "weight_decay", "schedule": "schedule",
                 "warmup": "warmup_epochs", "step_epochs": "step_epochs", "gamma": "gamma",
                 "model": "model", "hidden": "hidden", "activation": "activation",
                 "dropout": "dropout", "seed": "seed", "val_fraction": "val_fraction",
                 "kernels": "kernels", "zero_columns": "zero_columns", "augment": "augment",
                 "translate": "translate", "rotate": "rotate", "scale": "scale",
                 "shear": "shear", "elastic": "elastic", "label_smoothing": "label_smoothing"}


def train_parser(sub):
    from .config import ZERO_COLUMNS
    from .optim import OPTIMIZERS, SCHEDULES
    from .recipes import RECIPES, describe
    from .train import TrainConfig

    d = TrainConfig()
    t = sub.add_parser("train", help="train an MLP or CNN on MNIST (or any MNIST-format IDX "
                       "folder)", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"recipes (--recipe; options given override them):\n"
                       f"{describe()}\n\nWith --resume the run continues as the checkpoint "
                       "configured it: --epochs extends it,\n--kernels and --zero-columns may "
                       "change, any other training option that differs is refused.")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    opt = t.add_argument
    opt("--recipe", choices=tuple(RECIPES), help="a named set of the options below, chosen "
        "by measurement (listed at the end); default: default")
    opt("--epochs", type=positive_int, help=f"default {d.epochs}")
    opt("--batch-size", type=positive_int, help=f"default {d.batch_size}")
    opt("--lr", type=number(0, low_open=True), help=f"peak learning rate (default {d.lr})")
    opt("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    opt("--momentum", type=number(0, 1), help=f"SGD momentum (default {d.momentum})")
    opt("--nesterov", action="store_const", const=True, help="Nesterov momentum (SGD)")
    opt("--weight-decay", type=number(0), help=f"default {d.weight_decay}")
    opt("--schedule", choices=SCHEDULES, help=f"default {d.schedule}")
    opt("--warmup", type=number(0), help="linear warm-up length in epochs (may be fractional)")
    opt("--step-epochs", type=positive_int, help="step schedule: decay every this many "
        f"epochs (default {d.step_epochs})")
    opt("--gamma", type=number(0, low_open=True), help=f"step schedule: decay factor "
        f"(default {d.gamma})")
    opt("--model", help='"mlp" (default, sized by --hidden), "cnn" (conv32-pool-conv64-pool-'
        'fc128) or a layer spec such as conv16-pool-fc64 (convF[kK][sS][pP], pool[K][sS], '
        'fcN, dropP)')
    opt("--hidden", type=hidden, help="hidden layer widths, comma-separated (default "
        f"{','.join(map(str, d.hidden))})")
    opt("--activation", choices=("relu", "sigmoid", "tanh"), help=f"default {d.activation}")
    opt("--dropout", type=number(0, 1), help=f"default {d.dropout}")
    opt("--seed", type=non_negative_int, help=f"default {d.seed}")
    opt("--val-fraction", type=number(0, 1), help="hold out this fraction of the training "
        "set for validation")
    augment_options(opt, d)
    opt("--label-smoothing", type=number(0, 1), help="train against (1-eps) onehot + eps/C "
        f"(default {d.label_smoothing})")
    opt("--kernels", choices=("fused", "reference"), help=f"default {d.kernels}")
    opt("--zero-columns", choices=ZERO_COLUMNS, help="skip the input columns that are zero in "
        "a whole batch in the first layer's products (same result, fewer FLOPs), or read "
        "them all; auto (default): skip on the CPU, read on a GPU")
    opt("--tf32", action="store_true", help="TF32 matrix products on CUDA (compute "
        "capability >= 8.0; changes numerics); refused where the run is not on such a GPU")
    opt("--data-dir", help="folder with the four MNIST IDX files (raw or .gz)")
    opt("--out", help="output folder for checkpoint.npz and history.json (default "
        "runs/<date-time>)")
    opt("--resume", metavar="CHECKPOINT", help="continue an interrupted or finished run")
    opt("--workers", type=positive_int, help="data-parallel ranks on this host: runs this "
        "command under the mpi extra's mpiexec (the same as mpiexec -n N xptrain train ...)")
    opt("--no-download", action="store_true", help="never download data")
    opt("--quiet", action="store_true", help="print only the final summary")
    opt("--json", action="store_true", help="print one final JSON object on stdout (logs go "
        "to stderr)")
    opt("--plots", metavar="DIR", help="write learning curves, confusion matrix, predictions, "
        "mistakes and first-layer weights as PNGs (plot extra)")


def augment_options(opt, d):
    opt("--augment", action=argparse.BooleanOptionalAction, help="warp each training batch "
        "on the device: random translation, rotation, scale and shear (one bilinear affine "
        "warp per image), elastic distortion with --elastic; never at evaluation "
        "(--no-augment: off, also under a recipe that augments)")
    opt("--translate", type=number(0, 14), help=f"--augment: shift up to this many pixels "
        f"(default {d.translate})")
    opt("--rotate", type=number(0, 90), help=f"--augment: rotate up to this many degrees "
        f"(default {d.rotate}; 0 for data whose class depends on orientation)")
    opt("--scale", type=number(0, 1), help=f"--augment: zoom by up to this fraction "
        f"(default {d.scale})")
    opt("--shear", type=number(0, 60), help=f"--augment: shear up to this many degrees "
        f"(default {d.shear})")
    opt("--elastic", type=number(0, 10), help="--augment: elastic distortion, the standard "
        f"deviation in pixels of a smooth random displacement (default {d.elastic}: off)")


def data_options(p):
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help="folder with the four MNIST IDX files (raw or .gz)")
    p.add_argument("--no-download", action="store_true", help="never download data")
