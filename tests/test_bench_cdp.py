"""bench/cdp.py, the browser benchmark's DevTools client, against Debian's chromium."""

from __future__ import annotations

import pytest

from bench.cdp import Browser, CdpError
from browser_support import CHROMIUM, CHROMIUM_ARGS

PAGE = """<!doctype html><title>t</title><script>
window.answer = 41 + 1;
console.warn("careful");
setTimeout(() => { throw new Error("boom"); }, 0);
</script>"""


def test_pages_evaluate_report_errors_and_close_cleanly():
    browser = Browser(CHROMIUM, CHROMIUM_ARGS)
    try:
        assert browser.version.split(".")[0].isdigit()
        page = browser.new_page(640, 400)
        page.add_init_script("window.early = 'set before the page ran';")
        page.set_content(PAGE)
        assert page.evaluate("() => [window.answer, window.early, innerWidth]") == [42, "set before the page ran", 640]
        assert page.evaluate("(x) => x.a * 2", {"a": 21}) == 42
        assert page.evaluate("async () => { await new Promise(r => setTimeout(r, 10)); return 'later'; }") == "later"
        page.evaluate("() => { setTimeout(() => { window.ready = 'yes'; }, 50); }")
        assert page.wait_for_function("() => window.ready", timeout=5, polling=0.01) == "yes"
        with pytest.raises(CdpError, match="no truthy result"):
            page.wait_for_function("() => window.never", timeout=0.2)
        with pytest.raises(CdpError, match="nope"):
            page.evaluate("() => { throw new Error('nope'); }")
        assert any("careful" in c for c in page.console)
        assert page.cdp.send("Performance.enable") == {}
        metrics = {m["name"] for m in page.cdp.send("Performance.getMetrics")["metrics"]}
        assert "JSHeapUsedSize" in metrics
        for _ in range(100):  # the thrown error arrives as an event
            if page.errors:
                break
            page.evaluate("() => new Promise(r => setTimeout(r, 20))")
        assert any("boom" in e for e in page.errors)
    finally:
        browser.close()
    assert browser.proc.poll() is not None
