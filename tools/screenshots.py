#!/usr/bin/env python3
"""Screenshot every dashboard tab of the demo device, and check that each one shows live data.

    .venv/bin/python tools/screenshots.py             # -> test-artifacts/screenshots/<tab>.png
    .venv/bin/python tools/screenshots.py --readme    # also docs/images/dashboard*.png
    make screenshots                                   # the same as --readme, after venv and js

It starts ``examples/robot_arm.py`` with ``MON=port=0`` in its own session, waits for the
dashboard URL it prints, lets data flow for a few seconds, then opens every tab in headless
Chromium (Debian's ``/usr/bin/chromium`` through Playwright; never ``playwright install``).
For each tab it checks ``window.monbridge.views[ID]``: no error, no notice, rows present,
updates arriving. It presses "Take picture" once on the Controls tab so the log and the button
show something. ``--readme`` copies the 3D tab to docs/images/dashboard.png, and the
Motors and Controls tabs to dashboard-charts.png and dashboard-controls.png. Device,
bridge and browser are stopped on the way out, also on errors and Ctrl-C (or SIGTERM), and
any shared-memory segment the device left behind is removed.

Exit status: 0 all tabs fine; 1 a tab failed its check (the screenshots are still written);
2 could not run (no Chromium, no Playwright, web UI not built, device did not start).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-unsafe-swiftshader",
]
URL_RE = re.compile(r"monbridge: dashboard for '([^']+)' at (\S+)")
README_TAB = "arm"  # docs/images/dashboard.png: the 3D view shows frames, records and images at once
README_EXTRA = {"dashboard-charts.png": "motors", "dashboard-controls.png": "controls"}


class Failure(Exception):
    """Cannot run at all (exit 2)."""


def log(msg: str) -> None:
    print(f"screenshots: {msg}", file=sys.stderr, flush=True)


# -- the device ---------------------------------------------------------------------------------

class Device:
    """The demo device in its own session (it starts its bridge, which joins that session)."""

    def __init__(self, script: Path, mon: str, startup_timeout: float) -> None:
        self.script = script
        self.mon = mon
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=60)
        self.url: str | None = None
        self.name: str | None = None
        self._url_seen = threading.Event()

    def start(self) -> str:
        env = dict(os.environ, MON=self.mon, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._url_seen.wait(0.1):
            if self.proc.poll() is not None:
                raise Failure(f"the device exited with code {self.proc.returncode} before printing its URL:\n"
                              + self.output())
            if time.monotonic() > deadline:
                raise Failure(f"no dashboard URL from the device within {self.startup_timeout:g} s:\n" + self.output())
        assert self.url is not None
        return self.url

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:  # drained to the end, so the device never blocks on a full pipe
            line = line.rstrip("\n")
            self.lines.append(line)
            m = URL_RE.search(line)
            if m and not self._url_seen.is_set():
                self.name, self.url = m.group(1), m.group(2)
                self._url_seen.set()

    def output(self) -> str:
        return "\n".join("    " + line for line in self.lines) or "    (no output)"

    def stop(self) -> list[str]:
        """Stop device and bridge; return problems (leftover processes or segments)."""
        problems: list[str] = []
        proc = self.proc
        if proc is None:
            return problems
        pgid = proc.pid  # session leader: its pid is the group id the bridge inherits
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the monitor closes on SIGTERM and stops its bridge
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                problems.append("the device ignored SIGTERM for 15 s; signalled its whole session")
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                break
            if sig == signal.SIGKILL:
                problems.append("device or bridge still running after SIGTERM; killed its session")
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                if proc.poll() is None:
                    try:
                        proc.wait(timeout=0.1)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.1)
        if proc.poll() is None:
            proc.wait(timeout=5)
        if _group_alive(pgid):
            problems.append(f"processes of session {pgid} are still running")
        problems += self._remove_segments(proc.pid)
        return problems

    def _remove_segments(self, pid: int) -> list[str]:
        """Segments our device left (only if it died without closing): remove them, say so."""
        if not self.name:
            return []
        try:
            from device_agent.cleanup import scan
            from device_agent.shm import unlink_segment
        except ImportError as exc:  # pragma: no cover - the venv always has it
            return [f"cannot check /dev/shm: {exc}"]
        problems = []
        for dev in scan():
            if dev.device != self.name or dev.pid != pid:
                continue
            removed = [seg for seg in dev.segments if unlink_segment(seg)]
            if removed:
                problems.append(f"the device left {len(removed)} segment(s) in /dev/shm; removed them")
        return problems


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still counts for killpg(0); only live members matter
    return any(_state(pid) not in ("Z", None) for pid in _group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# -- the browser --------------------------------------------------------------------------------

def find_chromium(path: str) -> str:
    exe = shutil.which(path) if os.sep not in path else (path if os.access(path, os.X_OK) else None)
    if not exe:
        raise Failure(f"Chromium not found at {path!r}. Install Debian's package (apt-get install chromium) "
                      f"or pass --chromium PATH; this tool never downloads a browser.")
    return exe


def load_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Failure("the Python package 'playwright' is missing; run `make venv` "
                      "(do not run `playwright install`: the tool uses Debian's chromium)") from None
    return sync_playwright


VIEW_JS = """(id) => {
  const v = window.monbridge && window.monbridge.views[id];
  return v ? {kind: v.kind, rows: v.rows(), updates: v.updates, error: v.error} : null;
}"""


def shoot(url: str, chromium: str, out: Path, size: tuple[int, int], settle: float, only: list[str],
          skip: list[str]) -> tuple[list[dict], list[str]]:
    """Open every tab, check it, save OUT/<id>.png. Returns (results per tab, tab ids)."""
    sync_playwright = load_playwright()
    results: list[dict] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": size[0], "height": size[1]}, device_scale_factor=1)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning") and "GL Driver Message" not in m.text else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url)
            page.wait_for_function("() => window.monbridge && window.monbridge.connection === 'live' "
                                   "&& Object.keys(window.monbridge.views).length > 0", timeout=20_000)
            ids = page.eval_on_selector_all(".mb-tab[data-id]", "els => els.map(e => e.dataset.id)")
            log(f"tabs: {', '.join(ids)}; letting data flow for {settle:g} s")
            time.sleep(settle)
            for tab in ids:
                if (only and tab not in only) or tab in skip:
                    continue
                page.evaluate("(id) => { location.hash = '#/' + encodeURIComponent(id); }", tab)
                page.wait_for_function("(id) => window.monbridge.activeTab === id", arg=tab, timeout=5_000)
                results.append(check_tab(page, tab, out))
            if console:
                log("browser console:\n" + "\n".join("    " + line for line in console[-20:]))
        finally:
            browser.close()
    return results, ids


def check_tab(page, tab: str, out: Path) -> dict:
    res = {"id": tab, "ok": True, "note": ""}
    if tab == "status":
        time.sleep(1.5)  # the Status tab polls /api/stats about once a second
    else:
        # rows present, then watch updates for a moment (scenes subscribe only when shown)
        deadline = time.monotonic() + 10
        info = page.evaluate(VIEW_JS, tab)
        while info and not info["error"] and info["rows"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            info = page.evaluate(VIEW_JS, tab)
        if tab == "controls":
            press_button(page, "Take picture")
        time.sleep(1.5)
        after = page.evaluate(VIEW_JS, tab)
        if after is None:
            res.update(ok=False, note="no window.monbridge.views entry")
        else:
            res.update(kind=after["kind"], rows=after["rows"], updates=after["updates"],
                       new_updates=after["updates"] - info["updates"], error=after["error"])
            if after["error"]:
                res.update(ok=False, note=f"error: {after['error']}")
            elif after["rows"] == 0:
                res.update(ok=False, note="no rows")
            elif after["updates"] == info["updates"]:
                res["note"] = "no new data in 1.5 s"
        notices = page.eval_on_selector_all(f".mb-panel[data-id='{tab}'] .mb-notice",
                                            "els => els.map(e => e.textContent)")
        if notices:  # a soft spec problem (unknown usermeta key, dataset without a channel): fix the spec
            res["ok"] = False
            res["note"] = (res["note"] + "; " if res["note"] else "") + "notice: " + " | ".join(notices)
    page.screenshot(path=str(out / f"{tab}.png"))
    return res


def press_button(page, label: str) -> None:
    button = page.locator(".mb-panel.mb-active button.mb-btn", has_text=label)
    if button.count():
        button.first.click()
        page.wait_for_timeout(400)


# -- main -----------------------------------------------------------------------------------------

def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="test-artifacts/screenshots",
                    help="directory for <tab>.png (default: %(default)s)")
    ap.add_argument("--readme", action="store_true",
                    help=f"also write docs/images/dashboard.png (the '{README_TAB}' tab) and {', '.join(README_EXTRA)}")
    ap.add_argument("--readme-tab", default=README_TAB, help="tab for --readme (default: %(default)s)")
    ap.add_argument("--device", default="examples/robot_arm.py", help="device script (default: %(default)s)")
    ap.add_argument("--mon", default="port=0", help="MON for the device (default: %(default)s; add ,name=X if "
                                                    "another robot_arm runs)")
    ap.add_argument("--chromium", default="/usr/bin/chromium", help="browser executable (default: %(default)s)")
    ap.add_argument("--size", default="1200x700", help="viewport WxH (default: %(default)s)")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds of data before the first screenshot")
    ap.add_argument("--tab", action="append", default=[], help="only these tab ids (repeatable)")
    ap.add_argument("--skip", action="append", default=[], help="tab ids to leave out (repeatable)")
    opts = ap.parse_args(argv)

    # SIGTERM (e.g. from make or CI) unwinds through the finally below, like Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    device: Device | None = None
    try:
        w, _, h = opts.size.partition("x")
        size = (int(w), int(h))
        chromium = find_chromium(opts.chromium)
        load_playwright()
        if not (ROOT / "bridge/static/index.html").exists():
            raise Failure("the web UI is not built (bridge/static/index.html missing); run `make js`")
        out = (ROOT / opts.out) if not os.path.isabs(opts.out) else Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        device = Device(ROOT / opts.device, opts.mon, startup_timeout=30)
        url = device.start()
        log(f"device {device.name!r} serves {url.split('?')[0]}")
        results, ids = shoot(url, chromium, out, size, opts.settle, opts.tab, opts.skip)
    except Failure as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as exc:  # e.g. a Playwright timeout: say what and show the device's last words
        log(f"error: {type(exc).__name__}: {exc}")
        if device is not None:
            log("device output (last lines):\n" + device.output())
        return 2
    finally:
        if device is not None:
            for problem in device.stop():
                log(f"warning: {problem}")

    width = max(len(r["id"]) for r in results) if results else 4
    for r in results:
        figures = "" if "rows" not in r else f"rows {r['rows']:>6}  updates {r['updates']:>5} (+{r['new_updates']})"
        log(f"{'ok  ' if r['ok'] else 'FAIL'} {r['id']:<{width}}  {figures}  {r['note']}".rstrip())
    log(f"{len(results)} screenshot(s) in {out}")
    if opts.readme:
        for name, tab in {"dashboard.png": opts.readme_tab, **README_EXTRA}.items():
            src = out / f"{tab}.png"
            if not src.exists():
                log(f"error: no screenshot of tab {tab!r} for docs/images/{name} (tabs: {', '.join(ids)})")
                return 1
            dest = ROOT / "docs/images" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            log(f"wrote {dest.relative_to(ROOT)} ({tab})")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
