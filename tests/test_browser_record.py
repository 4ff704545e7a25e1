"""The Status tab's Recording card in a real browser: an operator clicks Record, watches the
recording's figures move, clicks Stop and the file is there; a viewer sees the recording but
has no button; an error (a hostile file name) is shown as text.

Real chromium (Playwright), the wave device of browser_support and the bridge it launches,
whose recordings go to ./recordings under the device's working directory (the test's tmp_path).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from browser_support import chromium, dashboards, devices, specs_dir  # noqa: F401  (fixtures)
from bridge_support import BridgeURL

mcap_reader = pytest.importorskip("mcap.reader")

CARD = "section[data-k=record]"
TEXT = "(sel) => { const n = document.querySelector(sel); return n ? n.textContent : null; }"


def text(dash: Any, key: str) -> str | None:
    return dash.js(TEXT, f"{CARD} [data-k={key}]")


def test_record_and_stop_from_the_status_tab(devices: Any, dashboards: Any, specs_dir: Path, tmp_path: Path) -> None:
    dev = devices.start(specs_dir)
    operator = dashboards.open(dev.url, label="operator")
    operator.open_tab("status")
    button = operator.page.locator(f"{CARD} [data-k=record-button]")
    operator.wait(f"() => document.querySelector('{CARD} [data-k=record-state]')?.textContent.startsWith('Not recording')",
                  what="the card to say it is not recording")
    assert button.is_visible() and button.text_content() == "Record"

    # a hostile name comes back in the bridge's error message: shown as text, never as HTML
    operator.page.locator(f"{CARD} [data-k=record-name]").fill("<img src=x onerror=window.__pwned=1>")
    button.click()
    message = operator.wait(f"() => document.querySelector('{CARD} [data-k=record-error]')?.textContent",
                            what="the refusal shown in the card")
    assert message.startswith("invalid_args: 'name' '<img src=x onerror=window.__pwned=1>'"), message
    assert operator.js(f"() => document.querySelectorAll('{CARD} img').length") == 0
    assert operator.js("() => window.__pwned === undefined")

    operator.page.locator(f"{CARD} [data-k=record-name]").fill("")
    button.click()
    operator.wait(f"() => document.querySelector('{CARD} [data-k=record-button]')?.textContent === 'Stop'",
                  what="the button to become Stop")
    file = text(operator, "record-file")
    assert file.startswith(dev.name + "-") and file.endswith(".mcap"), file
    assert text(operator, "record-error") == ""
    # the Status line follows the recording: records/s above 0, duration past a second
    operator.wait(f"() => parseFloat(document.querySelector('{CARD} [data-k=record-rate]')?.textContent) > 20"
                  f" && document.querySelector('{CARD} [data-k=record-seconds]')?.textContent.endsWith(' s')",
                  what="records/s and duration to move")
    assert re.fullmatch(r"none|\d+ \((wave|cloud) \d+(, (wave|cloud) \d+)?\)", text(operator, "record-missed"))

    # a viewer (the URL without the token) sees what is recording, and no button
    viewer = dashboards.open(BridgeURL(f"{dev.url.base}/", dev.url.base, dev.url.port, ""), label="viewer")
    viewer.open_tab("status")
    viewer.wait(f"(f) => document.querySelector('{CARD} [data-k=record-file]')?.textContent === f", file,
                what="the viewer's card to show the recording")
    assert viewer.js(f"() => document.querySelectorAll('{CARD} button, {CARD} input').length") == 0

    button.click()
    operator.wait(f"(f) => document.querySelector('{CARD} [data-k=last-file]')?.textContent === f", file,
                  what="the last recording to be the one just stopped")
    assert button.text_content() == "Record"
    assert text(operator, "last-reason") == "stopped by SIGTERM"
    operator.screenshot("record_card")

    path = tmp_path / "recordings" / file
    assert path.exists() and not Path(f"{path}.part").exists()
    with open(path, "rb") as f:
        summary = mcap_reader.make_reader(f).get_summary()
    counts = {ch.topic: summary.statistics.channel_message_counts.get(cid, 0) for cid, ch in summary.channels.items()}
    assert counts["/wave"] > 20, counts
    viewer.wait(f"(f) => document.querySelector('{CARD} [data-k=last-file]')?.textContent === f", file,
                what="the viewer's card to show the last recording")
    assert operator.page_errors == [] and viewer.page_errors == []
