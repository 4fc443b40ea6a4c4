"""The report renders in headless Chromium (Debian's `chromium`; `make prereqs` installs it) with visible plots.

A screenshot of the page proves it renders; a second page lays every embedded plot out at a
known place, so each one's pixels can be checked for content, with blank gaps in between
proving the check can tell an empty area from a plot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from report.build import build_report

FIXTURES = Path(__file__).parent / "fixtures" / "results"
PLOT_W, PLOT_H, GAP = 900, 560, 40
NEAR_WHITE = 245  # a pixel with every channel above this counts as background


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    build_report(FIXTURES, out)
    return out / "index.html"


def screenshot(html: Path, width: int, height: int, tmp_path: Path) -> np.ndarray:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (`make prereqs` installs it: apt-get install chromium)"
    shot = tmp_path / f"{html.stem}.png"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", f"--window-size={width},{height}", "--hide-scrollbars", html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"))


def ink(pixels: np.ndarray) -> float:
    """Share of pixels that are not background."""
    return float((pixels.min(axis=2) < NEAR_WHITE).mean())


def test_page_references_nothing_outside_itself(page):
    html = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()


def test_page_renders_in_chromium(page, tmp_path):
    pixels = screenshot(page, 1280, 4000, tmp_path)
    assert pixels.shape == (4000, 1280, 3)
    assert ink(pixels) > 0.05  # text, tables and the first plots, not a blank page
    assert ink(pixels[:600]) > 0.02  # the title and verdict start at the top


def test_every_plot_is_visible_and_not_blank(page, tmp_path):
    images = re.findall(r'<img class="plot"[^>]*src="(data:image/png;base64,[^"]+)"', page.read_text())
    assert len(images) == 5
    cells = "".join(
        f'<img src="{src}" style="position:absolute;left:0;top:{i * (PLOT_H + GAP)}px;'
        f'width:{PLOT_W}px;height:{PLOT_H}px">' for i, src in enumerate(images))
    grid = tmp_path / "plots.html"
    grid.write_text(f'<!DOCTYPE html><html><body style="margin:0;background:#fff">{cells}</body></html>')
    pixels = screenshot(grid, PLOT_W, len(images) * (PLOT_H + GAP), tmp_path)
    regions = [pixels[i * (PLOT_H + GAP):i * (PLOT_H + GAP) + PLOT_H] for i in range(len(images))]
    gaps = [pixels[i * (PLOT_H + GAP) + PLOT_H + 5:(i + 1) * (PLOT_H + GAP) - 5] for i in range(len(images))]
    for index, region in enumerate(regions):
        assert ink(region) > 0.03, f"plot {index} is blank"
        assert region.std() > 20, f"plot {index} has no contrast"
    assert all(ink(gap) == 0.0 for gap in gaps)  # the check does see blank areas as blank
    assert len({region.tobytes() for region in regions}) == len(regions)
