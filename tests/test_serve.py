"""The prediction server: the page, the predictions, every kind of bad request answered
4xx while it keeps serving, concurrent clients, and Ctrl-C."""

import http.client
import io
import json
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from xptrain.evaluate import load_model, predict_logits
from xptrain.serve import MAX_BODY, make_server

PIL = pytest.importorskip("PIL.Image", reason='needs Pillow: pip install ".[plot]"')


@pytest.fixture(scope="module")
def server(trained, cpu):
    model, meta = load_model(trained("mlp"), cpu)
    srv = make_server(model, meta, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), data


def post_json(server, obj):
    status, _, data = request(server, "POST", "/predict", json.dumps(obj).encode(),
                              {"Content-Type": "application/json"})
    return status, json.loads(data)


def digit_image(mnist, i, fmt="PNG", scale=5):
    """Test image ``i`` as a PNG/JPEG, scaled up as a drawing would be."""
    img = PIL.fromarray(mnist.x_test[i].reshape(28, 28)).resize((28 * scale, 28 * scale))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_binds_localhost_and_serves_the_page(server):
    assert server.server_address[0] == "127.0.0.1"
    status, ctype, page = request(server, "GET", "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'<canvas id="pad"' in page and b"http://" not in page and b"https://" not in page
    status, _, data = request(server, "GET", "/healthz")
    assert status == 200 and json.loads(data)["status"] == "ok"
    status, _, data = request(server, "GET", "/../../etc/passwd")
    assert status == 404 and "no such path" in json.loads(data)["error"]


def test_json_pixels_predict_as_the_model_does(server, mnist, trained, cpu):
    model, _ = load_model(trained("mlp"), cpu)
    probs_of = predict_logits(model, mnist.x_test[:20])
    for i in range(20):
        status, body = post_json(server, {"pixels": (mnist.x_test[i] / 255).tolist()})
        assert status == 200
        assert body["top"][0]["class"] == int(probs_of[i].argmax())
        assert len(body["pixels"]) == 784 and len(body["probabilities"]) == 10
        assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert [t["probability"] for t in body["top"]] == sorted(
            body["probabilities"], reverse=True)[:3]


@pytest.mark.parametrize("fmt,ctype", [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_images_are_preprocessed_as_predict_does(server, mnist, fmt, ctype, tmp_path):
    from xptrain.predict import load_image

    right = 0
    for i in range(30):
        data = digit_image(mnist, i, fmt)
        status, _, body = request(server, "POST", "/predict", data, {"Content-Type": ctype})
        assert status == 200
        result = json.loads(body)
        path = tmp_path / f"{i}.{fmt.lower()}"
        path.write_bytes(data)
        np.testing.assert_allclose(result["pixels"], load_image(path).reshape(-1), atol=1e-4)
        right += result["top"][0]["class"] == mnist.y_test[i]
    assert right >= 27


BAD = [
    ({"Content-Type": "text/plain"}, b"hello", 415, "Content-Type must be one of"),
    ({}, b"hello", 415, "got 'none'"),
    ({"Content-Type": "image/png"}, b"not a png at all", 400, "not a readable PNG or JPEG"),
    ({"Content-Type": "application/json"}, b"{nope", 400, 'must be {"pixels"'),
    ({"Content-Type": "application/json"}, b'{"pixels": "abc"}', 400, "a list of numbers"),
    ({"Content-Type": "application/json"}, b'{"pixels": [0.5, 0.5]}', 400,
     "got shape [2]"),
    ({"Content-Type": "application/json"}, json.dumps({"pixels": [2.0] * 784}).encode(), 400,
     "in [0, 1]"),
    ({"Content-Type": "application/json"}, b'{"other": 1}', 400, 'must be {"pixels"'),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server, case):
    headers, body, code, message = BAD[case]
    status, ctype, data = request(server, "POST", "/predict", body, headers)
    assert status == code and ctype == "application/json"
    assert message in json.loads(data)["error"]
    assert request(server, "GET", "/healthz")[0] == 200


def test_absurd_dimensions_are_refused_before_decoding(server):
    buf = io.BytesIO()
    PIL.new("L", (5000, 4000)).save(buf, "PNG")  # 20 M pixels in ~20 kB
    status, _, data = request(server, "POST", "/predict", buf.getvalue(),
                              {"Content-Type": "image/png"})
    assert status == 400 and "5000x4000 pixels" in json.loads(data)["error"]


def test_oversized_body_is_refused_unread(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    conn.send(b"x" * 1000)  # far less than announced: the server must not wait for it
    resp = conn.getresponse()
    assert resp.status == 413 and "at most" in json.loads(resp.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "image/png")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_concurrent_clients_get_no_errors(server, mnist):
    """8 clients x 50 requests at once; every answer a 200 with the right shape."""
    bodies = [json.dumps({"pixels": (mnist.x_test[i] / 255).tolist()}).encode()
              for i in range(8)]
    failures = []

    def client(k):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        for _ in range(50):
            conn.request("POST", "/predict", bodies[k], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            if resp.status != 200 or len(body["probabilities"]) != 10:
                failures.append((k, resp.status))
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_ctrl_c_stops_the_server_cleanly(trained):
    proc = subprocess.Popen([sys.executable, "-m", "xptrain", "serve", str(trained("mlp")),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "http://127.0.0.1:" in line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0 and time.monotonic() - start < 10
        assert "stopped" in proc.stderr.read()
    finally:
        proc.kill()


def test_one_keep_alive_connection_serves_many_requests(server, mnist):
    """HTTP/1.1: a client's requests, good and bad, share one connection."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    body = json.dumps({"pixels": (mnist.x_test[0] / 255).tolist()}).encode()
    statuses = []
    for ctype, data in [("application/json", body), ("text/plain", b"x"),
                        ("image/png", b"junk"), ("application/json", body)]:
        conn.request("POST", "/predict", data, {"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    assert statuses == [200, 415, 400, 200] and resp.version == 11
    conn.close()
