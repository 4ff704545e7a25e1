"""The page asks for ``bundle`` messages (docs/protocol.md §4.9) and draws what comes in them:
two views of two channels published together, in a real browser against a real bridge."""

from __future__ import annotations

from browser_support import (  # noqa: F401  (chromium, dashboards, devices, specs_dir: fixtures)
    WAVE_SPEC,
    Dashboards,
    Devices,
    chromium,
    dashboards,
    devices,
    specs_dir,
    write_spec,
)

# wave's and wave2's views at the same rate (30 Hz): the bridge keeps a page's channels at one
# rate in step however late it confirms them (docs/protocol.md §3), so they come in bundles
WAVE2_SPEC = {**WAVE_SPEC, "usermeta": {**WAVE_SPEC["usermeta"], "title": "Wave 2", "order": 11, "controls": {}},
              "data": {"name": "wave2"}, "params": []}

_COUNT_BUNDLES = """() => {
  window.__bundles = {messages: 0, items: 0, channels: {}, alone: 0};
  window.monbridge._internals.conn.socket.onAny((event, msg) => {
    if (event === "data" && msg.channel.startsWith("wave")) window.__bundles.alone += 1;
    if (event !== "bundle") return;
    window.__bundles.messages += 1;
    for (const m of msg) {
      window.__bundles.items += 1;
      window.__bundles.channels[m.channel] = (window.__bundles.channels[m.channel] || 0) + 1;
    }
  });
}"""

# the seq column of wave2's Vega dataset, in the order of its rows
_SEQS = """() => window.monbridge._internals.tabs.views()["wave2"].result.view.data("wave2").map((r) => r.seq)"""


def test_the_page_takes_bundles_and_every_row_in_them_reaches_its_view(devices: Devices, specs_dir,
                                                                      dashboards: Dashboards):
    write_spec(specs_dir, "wave.vl.json", WAVE_SPEC)
    write_spec(specs_dir, "wave2.vl.json", WAVE2_SPEC)
    dev = devices.start(specs_dir)
    dash = dashboards.open(dev.url, "#/wave2")
    dash.js(_COUNT_BUNDLES)
    dash.wait_view("wave2")
    dash.wait_rows_grow("wave2")
    dash.wait("() => window.__bundles.messages >= 30", what="30 bundle messages", timeout_ms=20_000)
    seen = dash.js("() => window.__bundles")
    assert set(seen["channels"]) == {"wave", "wave2"} and seen["items"] >= 2 * seen["messages"], seen
    # wave and wave2 go one by one only until the page's two subscriptions fall into step, or
    # for a round after a stall (2 lone messages in a quiet run; 1,017 when nothing kept them in step)
    assert seen["alone"] < seen["messages"], seen
    # from here on (the page's first subscriptions, which start from "now", are behind us),
    # 3 s of rows at ~100 Hz: contiguous, nothing lost or doubled on the way through bundles
    start = max(dash.js(_SEQS))
    dash.wait(f"() => Math.max(...({_SEQS})()) >= {start + 300}", what="300 more rows in wave2")
    seqs = [s for s in dash.js(_SEQS) if s >= start]
    assert len(seqs) > 300 and seqs == list(range(start, start + len(seqs))), seqs[:5]
    dash.open_tab("wave")
    dash.wait_rows_grow("wave")
    assert dash.connection() == "live"
    assert not dash.page_errors, dash.page_errors
