"""The page as a user handles it (issue 13 §4): the token leaves the address bar but stays
with the tab, and every chart and the 3D view can be saved as images.

Real chromium (Playwright), the wave device of browser_support and its own bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from browser_support import Dashboard, chromium, dashboards, devices, specs_dir  # noqa: F401  (fixtures)

VIEWER = "() => document.body.classList.contains('mb-viewer')"


def test_the_token_leaves_the_address_bar_and_a_reload_keeps_it(devices: Any, dashboards: Any,
                                                                 specs_dir: Path) -> None:
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, fragment="#/wave")
    dash.wait("() => !location.search.includes('token')", what="the token out of the address bar")
    assert dash.page.url == f"{dev.url.base}/#/wave", dash.page.url
    assert dash.js(VIEWER) is False, "opened with the token, the page must be an operator"

    dash.page.reload(wait_until="load")
    dash.wait_connection("live")
    assert dash.js(VIEWER) is False, "after a reload the tab still has its token"
    assert "token" not in dash.page.url

    # the URL as someone would copy it from the address bar: a viewer on a loopback bridge
    copied = dash.page.url
    context = dashboards.browser.new_context()
    other = Dashboard(context, context.new_page(), dev.url, "copied")
    dashboards.opened.append(other)   # closed at teardown
    other.page.goto(copied, wait_until="load")
    other.wait("() => window.monbridge && window.monbridge.connection === 'live'", what="a live connection")
    assert other.js(VIEWER) is True, "a URL without the token must open as a viewer"


def test_charts_and_the_scene_save_as_images(devices: Any, dashboards: Any, specs_dir: Path,
                                             tmp_path: Path) -> None:
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, fragment="#/wave")
    dash.wait_rows_grow("wave")
    panel = '.mb-panel[data-id="wave"]'
    page = dash.page
    menu = page.locator(f"{panel} details").first     # vega-embed's "…" menu
    menu.locator("summary").click()
    links = page.locator(f"{panel} .vega-actions a")
    assert sorted(links.all_inner_texts()) == ["Save as PNG", "Save as SVG"], links.all_inner_texts()
    for label, suffix, magic in (("Save as SVG", ".svg", b"<svg"), ("Save as PNG", ".png", b"\x89PNG")):
        menu.evaluate("(d) => { d.open = true; }")
        with page.expect_download() as info:
            page.locator(f"{panel} .vega-actions a", has_text=label).click()
        download = info.value
        assert download.suggested_filename == f"wave{suffix}", download.suggested_filename
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        assert saved.read_bytes().startswith(magic) and saved.stat().st_size > 1000, saved.stat().st_size

    dash.open_tab("cloud")
    dash.wait_scene_pixels("cloud")
    with page.expect_download() as info:
        page.locator('.mb-panel[data-id="cloud"] .mb-save').click()
    download = info.value
    assert download.suggested_filename == "cloud.png"
    saved = tmp_path / "cloud.png"
    download.save_as(saved)
    assert saved.read_bytes().startswith(b"\x89PNG") and saved.stat().st_size > 1000
