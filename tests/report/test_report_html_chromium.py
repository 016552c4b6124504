"""report.html opens in a real browser and every image loads (headless Chromium; skipped without it)."""

import re
import shutil
import subprocess

import pytest

from simtune.report import build_document, write_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# added to a copy of the page only: after load, count the images that decoded (naturalWidth > 0)
PROBE = ('<script>window.addEventListener("load", function () {'
         'var images = Array.prototype.slice.call(document.images);'
         'document.body.setAttribute("data-images-total", String(images.length));'
         'document.body.setAttribute("data-images-loaded", String(images.filter(function (i) {'
         'return i.complete && i.naturalWidth > 0; }).length)); });</script>')


@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH")
def test_report_html_opens_and_its_images_load(study, tmp_path):
    document = build_document(study)
    written = write_report(document, tmp_path / "report")
    probe = tmp_path / "probe.html"
    probe.write_text(written.html_path.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = result.stdout
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, f"the page did not finish loading: {result.stderr[-500:]}"
    assert int(total.group(1)) == len(document.figures) == 8
    assert int(loaded.group(1)) == int(total.group(1))
    assert "Capacity plan for gpt2-xl" in dom
