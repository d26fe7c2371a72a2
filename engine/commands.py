"""The ``plot``, ``predict``, ``export``, ``serve`` and ``bench`` subcommands (the parser
lives in :mod:`.cli`)."""

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
    from .ensemble import load_ensemble
    from .predict import predict_files

    ens = load_ensemble([args.checkpoint, *args.ensemble], select_backend(args.device))
    failed, results = 0, []
    for name, top, error in predict_files(ens, args.files, ens.image_shape):
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


def cmd_export(args):
    from .export import export_checkpoint

    info = export_checkpoint(args.checkpoint, args.file, args.opset)
    shape = "x".join(map(str, info["input_shape"]))
    print(f"{info['file']}: ONNX opset {info['opset']}, input {info['input']!r} float32 "
          f"({shape}, pixels in [0, 1]), output {info['output']!r}")
    return 0


def cmd_serve(args):
    from .backend import select_backend
    from .evaluate import load_model
    from .serve import make_server

    try:
        import PIL  # noqa: F401 - the page posts PNG images
    except ImportError:
        from .predict import ImageError

        raise ImageError('serve needs Pillow: pip install "xptrain[plot]"') from None
    model, meta = load_model(args.checkpoint, select_backend(args.device))
    # A request is ~2 ms of Python: a thread that keeps the interpreter lock for up to 20 ms
    # (not 5) mostly finishes its request before another takes over (8 PNG clients: p99
    # 42.3 / 42.4 against 45.6 / 46.4 ms, interleaved)
    sys.setswitchinterval(0.02)
    server = make_server(model, meta, args.host, args.port, args.verbose)
    host, port = server.server_address[:2]
    print(f"serving {args.checkpoint} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("xptrain: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
