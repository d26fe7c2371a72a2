"""The ``plot``, ``predict`` and ``bench`` subcommands (the parser lives in :mod:`.cli`)."""

import json
import os
import sys


def write_plots(model, history, dataset, out_dir):
    from .evaluate import predict_logits
    from .plots import write_all

    return write_all(out_dir, history, model.state_dict(), dataset,
                     predict_logits(model, dataset.x_test))


def cmd_plot(args):
    from .backend import select_backend
    from .data import load_mnist
    from .evaluate import load_model
    from .plots import pyplot

    pyplot()
    run = os.path.abspath(args.run_dir)
    model, meta = load_model(os.path.join(run, "checkpoint.npz"), select_backend(args.device))
    data = load_mnist(args.data_dir, download=not args.no_download, progress=False)
    paths = write_plots(model, meta["history"], data, args.out or os.path.join(run, "plots"))
    for p in paths:
        print(p)
    return 0


def cmd_predict(args):
    from .backend import select_backend
    from .evaluate import load_model
    from .predict import predict_files

    model, meta = load_model(args.checkpoint, select_backend(args.device))
    shape = tuple(meta.get("image_shape", (28, 28)))
    failed, results = 0, []
    for name, top, error in predict_files(model, args.files, shape):
        if error:
            failed += 1
            print(f"xptrain: error: {error}", file=sys.stderr)
            results.append({"file": name, "error": error})
            continue
        results.append({"file": name, "top": [{"class": c, "probability": p} for c, p in top]})
        if not args.json:
            print(f"{name}: " + "  ".join(f"{c} ({p:.1%})" for c, p in top))
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


def cmd_bench(args):
    from .bench import harness

    harness.run(args)
    return 0
