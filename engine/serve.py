"""``xptrain serve``: a drawing page and a prediction endpoint for a checkpoint.

A threaded stdlib ``http.server``: no dependency beyond Pillow (already needed to read
images), fast enough for one model's small forward passes, and nothing of the request but
its body is used: the page is a static file inside the package, the paths are a fixed
table, nothing in a request reaches the file system.

``GET /`` the page; ``GET /healthz`` the model and device; ``POST /predict`` with a PNG or
JPEG body (preprocessed as ``xptrain predict`` preprocesses image files) or JSON
``{"pixels": [784 values in 0..1]}`` (a ready 28x28 image, as an IDX digit) returns JSON
``{"top": [{"class", "probability"} x 3], "probabilities": [...], "pixels": [...]}``, the
pixels being what the model saw. Bad requests get a 4xx JSON error naming the problem.
"""

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np

MAX_BODY = 4 * 2**20  # bytes of a request body; more is refused unread (413)
MAX_PIXELS = 4096 * 4096  # of an uploaded image, checked before it is decoded
IMAGE_TYPES = ("image/png", "image/jpeg")


class RequestError(Exception):
    """A bad request: ``status`` and a message for the JSON error."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Predictor:
    """The model of a checkpoint, behind a lock: the layers reuse their buffers, so one
    forward runs at a time (each takes well under a millisecond for the MLP)."""

    def __init__(self, model, meta):
        self.model, self.meta = model, meta
        self.image_shape = tuple(meta.get("image_shape", (28, 28)))
        self.n_pixels = int(np.prod(self.image_shape))
        self.lock = threading.Lock()

    def predict(self, image):
        """image: (H, W) float32 in [0, 1] -> the response dict."""
        from .backend import to_host
        from .metrics import softmax

        x = self.model.xp.asarray(image.reshape(1, -1).astype(np.float32))
        with self.lock:
            logits = self.model.forward(x)
        probs = softmax(to_host(logits).astype(np.float64))[0]
        order = np.argsort(-probs)[:3]
        return {"top": [{"class": int(c), "probability": float(probs[c])} for c in order],
                "probabilities": [float(p) for p in probs],
                "pixels": np.round(image.reshape(-1).astype(np.float64), 4).tolist()}

    def image_from_body(self, content_type, body):
        if content_type in IMAGE_TYPES:
            return self._decode_image(body)
        if content_type == "application/json":
            return self._pixels_from_json(body)
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                           f"Content-Type must be one of {', '.join(IMAGE_TYPES)} or "
                           f"application/json, got {content_type or 'none'!r}")

    def _decode_image(self, body):
        from PIL import Image, UnidentifiedImageError

        from .predict import mnist_style

        try:
            with Image.open(io.BytesIO(body)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS or min(w, h) < 1:
                    raise RequestError(HTTPStatus.BAD_REQUEST, f"image of {w}x{h} pixels: at "
                                       f"most {MAX_PIXELS:,} pixels are accepted")
                gray = np.asarray(img.convert("L"), np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not a readable PNG or "
                               "JPEG image") from None
        return mnist_style(gray, self.image_shape[0], round(self.image_shape[0] * 20 / 28))

    def _pixels_from_json(self, body):
        try:
            pixels = json.loads(body)["pixels"]
            x = np.asarray(pixels, np.float64)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON body must be {"pixels": [...]} '
                               "with a list of numbers") from None
        if x.shape != (self.n_pixels,):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"pixels must be a flat list of "
                               f"{self.n_pixels} numbers, got shape {list(x.shape)}")
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise RequestError(HTTPStatus.BAD_REQUEST, "pixels must be finite numbers in "
                               "[0, 1]")
        return x.astype(np.float32).reshape(self.image_shape)


class Handler(BaseHTTPRequestHandler):
    """The three routes; every error is a JSON body."""

    server_version = "xptrain"
    protocol_version = "HTTP/1.1"  # keep-alive: a client's requests share one connection
    # headers and body go out as two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers, 40 ms a request (measured)
    disable_nagle_algorithm = True
    predictor = None  # set per server by make_server
    page = b""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        if self.path in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, self.page, "text/html; charset=utf-8")
        if self.path == "/healthz":
            meta = self.predictor.meta
            return self._json(HTTPStatus.OK, {"status": "ok", "epoch": meta.get("epoch"),
                                              "image_shape": list(self.predictor.image_shape),
                                              "device": self.predictor.model.xp.__name__})
        self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})

    def do_POST(self):  # noqa: N802
        if self.path != "/predict":
            self.close_connection = True  # its body is not read
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})
        try:
            body = self._body()
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            image = self.predictor.image_from_body(content_type.lower(), body)
            self._json(HTTPStatus.OK, self.predictor.predict(image))
        except RequestError as exc:
            self._json(exc.status, {"error": str(exc)})

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True  # where its body ends is unknown
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read: this connection ends
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"body of {int(length):,} bytes: at most {MAX_BODY:,}")
        return self.rfile.read(int(length))

    def _json(self, status, obj):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status, data, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # one line per request on stderr, as the stdlib
        if self.server.verbose:
            super().log_message(fmt, *args)


def make_server(model, meta, host="127.0.0.1", port=8000, verbose=False):
    """A :class:`ThreadingHTTPServer` serving ``model`` (call ``serve_forever``)."""
    page = resources.files(__package__).joinpath("static/index.html").read_bytes()
    handler = type("BoundHandler", (Handler,), {"predictor": Predictor(model, meta),
                                                "page": page})
    server = _Server((host, port), handler)
    server.verbose = verbose
    return server


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for idle keep-alive connections
    request_queue_size = 64  # the stdlib's 5 dropped connections of 8 clients at once
