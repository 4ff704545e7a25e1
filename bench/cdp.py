"""A minimal Chrome DevTools Protocol client for bench.browser and bench.soak: chromium with
the Network domain off (Playwright turns it on, and chromium then copies every WebSocket frame
to the driver: see docs/performance.md, "Browser"). One websocket to the browser, sessions
flattened onto it; launch, one window and browser context per page, init scripts,
navigation, ``evaluate``, page errors and console warnings, the JS heap, and raw ``send``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable

import websocket

# What Playwright passes for a headless page that stays "visible": without these, chromium
# throttles timers and animation frames of windows it considers in the background.
VISIBLE_ARGS = [
    "--disable-background-timer-throttling", "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding", "--hide-scrollbars", "--mute-audio",
]


class CdpError(RuntimeError):
    pass


class Connection:
    """One websocket to the browser; a reader thread routes replies by id and events by session."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[int, list[Any]] = {}  # id -> [Event, reply]
        self._handlers: dict[tuple[str | None, str], list[Callable[[dict], None]]] = {}
        self.closed = False
        threading.Thread(target=self._read, name="cdp-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if "id" in msg:
                    slot = self._waiting.pop(msg["id"], None)
                    if slot is not None:
                        slot[1] = msg
                        slot[0].set()
                    continue
                for handler in self._handlers.get((msg.get("sessionId"), msg.get("method")), []):
                    with contextlib.suppress(Exception):   # a handler's bug must not stop the reader
                        handler(msg.get("params", {}))
        except Exception:
            self.closed = True
            for slot in list(self._waiting.values()):
                slot[0].set()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        if self.closed:
            raise CdpError(f"{method}: the browser connection is closed")
        msg: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        slot = [threading.Event(), None]
        self._waiting[msg["id"]] = slot
        with self._lock:
            self.ws.send(json.dumps(msg))
        if not slot[0].wait(timeout):
            self._waiting.pop(msg["id"], None)
            raise CdpError(f"{method}: no answer in {timeout} s")
        if (reply := slot[1]) is None:
            raise CdpError(f"{method}: the browser connection closed")
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')} ({reply['error'].get('data', '')})")
        return reply.get("result", {})

    def on(self, session: str | None, method: str, handler: Callable[[dict], None]) -> None:
        self._handlers.setdefault((session, method), []).append(handler)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.ws.close()


class CdpPage:
    """A page's session: navigation, ``evaluate``, errors and console warnings, the JS heap."""

    def __init__(self, conn: Connection, session_id: str) -> None:
        self.conn = conn
        self.id = session_id
        self.cdp = self   # page.cdp.send(method, params), like Playwright's CDPSession
        self.errors: list[str] = []
        self.console: list[str] = []
        self._loaded = threading.Event()
        conn.on(session_id, "Page.loadEventFired", lambda p: self._loaded.set())
        conn.on(session_id, "Runtime.exceptionThrown", self._exception)
        conn.on(session_id, "Runtime.consoleAPICalled", self._console)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        """A CDP command in this page's session."""
        return self.conn.send(method, params, self.id, timeout)

    def _exception(self, params: dict) -> None:
        d = params.get("exceptionDetails", {})
        self.errors.append(str(d.get("exception", {}).get("description") or d.get("text")))

    def _console(self, params: dict) -> None:
        kind = params.get("type")
        if kind in ("error", "warning"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{kind}: {text}")

    def add_init_script(self, source: str) -> None:
        self.cdp.send("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def goto(self, url: str, timeout: float = 60.0) -> None:
        self._loaded.clear()
        result = self.cdp.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        if not self._loaded.wait(timeout):
            raise CdpError(f"{url} did not finish loading in {timeout} s")

    def set_content(self, html: str) -> None:
        self.goto("data:text/html," + urllib.parse.quote(html))

    def evaluate(self, function: str, arg: Any = None, timeout: float = 60.0) -> Any:
        """Call the JS function source ``function`` with ``arg`` (JSON) and return its value."""
        expr = f"({function})({json.dumps(arg)})"
        result = self.cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                                    "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            raise CdpError(f"evaluate: {d.get('exception', {}).get('description') or d.get('text')}")
        return result.get("result", {}).get("value")

    def js_heap_mb(self) -> float:
        """JSHeapUsedSize in MiB (``Performance.getMetrics``; send ``Performance.enable`` first)."""
        metrics = {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}
        return metrics["JSHeapUsedSize"] / 2**20

    def native_heap_mb(self) -> float:
        """The page's embedder (blink, Oilpan) heap in MiB: ``Runtime.getHeapUsage``'s
        ``embedderHeapUsedSize``, which ``js_heap_mb`` leaves out (DOM nodes, canvas caches)."""
        return self.cdp.send("Runtime.getHeapUsage")["embedderHeapUsedSize"] / 2**20

    def collect_garbage(self) -> None:
        """A full garbage collection in the page (``HeapProfiler.collectGarbage``)."""
        self.cdp.send("HeapProfiler.collectGarbage")

    def wait_for_function(self, function: str, arg: Any = None, timeout: float = 30.0, polling: float = 0.1) -> Any:
        """Evaluate until the result is truthy; return it. Raises CdpError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(function, arg)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"no truthy result within {timeout} s (last: {value!r})")
            time.sleep(polling)


class Browser:
    """Debian's chromium, launched with a fresh profile and --remote-debugging-port=0."""

    def __init__(self, executable: str, args: list[str], start_timeout: float = 60.0,
                 new_session: bool = False) -> None:
        """``new_session``: start chromium in a session of its own, out of reach of a Ctrl-C in
        the terminal (which then only the caller gets, and handles by calling ``close``)."""
        self.profile = tempfile.mkdtemp(prefix="bench-browser-profile-")
        self.proc = subprocess.Popen(
            [executable, *args, *VISIBLE_ARGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=new_session)
        self.stderr: list[str] = []
        urls: list[str] = []
        found = threading.Event()

        def read() -> None:  # the DevTools URL, then the rest, drained to the end
            for line in self.proc.stderr:
                if len(self.stderr) < 1000:
                    self.stderr.append(line.rstrip())
                if line.startswith("DevTools listening on "):
                    urls.append(line.split(" on ", 1)[1].strip())
                    found.set()

        threading.Thread(target=read, name="chromium-stderr", daemon=True).start()
        if not found.wait(start_timeout):
            self.close()
            raise CdpError(f"chromium did not start its DevTools endpoint in {start_timeout} s: {self.stderr[-5:]}")
        self.conn = Connection(urls[0])
        self.version = self.conn.send("Browser.getVersion")["product"].split("/", 1)[-1]

    def new_page(self, width: int, height: int) -> CdpPage:
        """A window of its own in a browser context of its own (as Playwright's new_context)."""
        context_id = self.conn.send("Target.createBrowserContext")["browserContextId"]
        target_id = self.conn.send("Target.createTarget", {
            "url": "about:blank", "browserContextId": context_id, "newWindow": True,
            "width": width, "height": height})["targetId"]
        session_id = self.conn.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})["sessionId"]
        page = CdpPage(self.conn, session_id)
        for method, params in (("Page.enable", None), ("Runtime.enable", None),
                               ("Emulation.setDeviceMetricsOverride",
                                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}),
                               ("Emulation.setFocusEmulationEnabled", {"enabled": True})):
            page.cdp.send(method, params)
        return page

    def close(self, timeout: float = 10.0) -> None:
        if getattr(self, "conn", None) is not None and not self.conn.closed:
            with contextlib.suppress(CdpError):
                self.conn.send("Browser.close", timeout=5.0)
            self.conn.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)
