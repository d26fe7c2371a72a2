"""The drawing page in a real browser: headless Chromium driven by Selenium draws digits on
the canvas stroke by stroke and reads the prediction the page shows."""

import os
import shutil
import threading

import numpy as np
import pytest
from xptrain.evaluate import load_model, predict_logits
from xptrain.serve import make_server

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        why = "needs Chromium and ChromeDriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(why + ": CI installs them")
        pytest.skip(why)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1000,600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, trained, cpu):
    model, meta = load_model(trained("mlp"), cpu)
    server = make_server(model, meta, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    browser.get(f"http://{host}:{port}/")
    yield browser
    server.shutdown()
    server.server_close()


def draw(driver, strokes):
    """Each stroke a list of (x, y) canvas points (280 x 280), drawn as pointer moves."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    for points in strokes:
        chain = ActionChains(driver, duration=10)
        x0, y0 = points[0]
        chain.move_to_element_with_offset(pad, x0 - 140, y0 - 140).click_and_hold()
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            chain.move_by_offset(xb - xa, yb - ya)
        chain.release().perform()


def shown_digit(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(d):
        return d.execute_script(
            "const p = document.getElementById('prediction');"
            "return window.lastSent > 0 && p.dataset.seq === String(window.lastSent)"
            " ? p.dataset.digit : null;")
    return int(WebDriverWait(driver, 15).until(settled))


def line(a, b, n=12):
    return [(round(a[0] + (b[0] - a[0]) * t / n), round(a[1] + (b[1] - a[1]) * t / n))
            for t in range(n + 1)]


def trace(image):
    """Strokes along the bright runs of each row of a 28x28 image, 10 canvas px a pixel."""
    strokes = []
    for r, row in enumerate(image):
        on = np.flatnonzero(row > 127)
        for run in np.split(on, np.flatnonzero(np.diff(on) > 1) + 1) if on.size else []:
            y = r * 10 + 5
            strokes.append(line((run[0] * 10 + 5, y), (run[-1] * 10 + 5, y), 2))
    return strokes


def clear(driver):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "clear").click()
    driver.execute_script("window.lastSent = 0;")


@pytest.mark.parametrize("digit,strokes", [
    (1, [line((140, 40), (150, 240))]),
    (7, [line((70, 50), (210, 50)), line((210, 50), (120, 240))]),
])
def test_drawn_strokes_are_read(page, digit, strokes):
    clear(page)
    draw(page, strokes)
    assert shown_digit(page) == digit


def test_a_traced_test_digit_is_read(page, mnist, trained, cpu, tmp_path):
    model, _ = load_model(trained("mlp"), cpu)
    logits = predict_logits(model, mnist.x_test[:200])
    # a confidently read 3, 5 and 8 (digits with curves, unlike strokes of 1 and 7)
    for want in (3, 5, 8):
        i = next(i for i in range(200) if mnist.y_test[i] == want == logits[i].argmax()
                 and np.diff(np.sort(logits[i])[-2:])[0] > 5)  # a clear margin
        clear(page)
        draw(page, trace(mnist.x_test[i].reshape(28, 28)))
        assert shown_digit(page) == want
        seen = page.execute_script(
            "return Array.from(document.getElementById('seen').getContext('2d')"
            ".getImageData(0, 0, 28, 28).data).filter((v, k) => k % 4 == 0)")
        assert max(seen) > 200 and sum(v > 100 for v in seen) > 40  # the 28x28 it was sent
    shot = os.environ.get("XPTRAIN_SCREENSHOT")
    page.save_screenshot(shot or str(tmp_path / "page.png"))
