"""The documentation's Python examples run, and its links resolve, so the docs cannot rot.

Every fenced ```python block in README.md and docs/*.md is run, unless a marker comment is
the last non-blank line before its opening fence:

    <!-- not-run: REASON -->                  a fragment (undefined names, a signature...): skipped
    <!-- run: with-bridge -->                 like an unmarked block, but with a real bridge
    <!-- run: forever -->                     a device loop: runs until it is stopped
    <!-- run: client-of=examples/NAME.py -->  a client: gets the URL of a running example as argv[1]

How each kind runs (``python scriptN.py ARG`` in a temporary directory, through conftest's
``launch``, so stray processes and segments fail the test):

* no marker: to completion, twice: with MON unset, then with ``MON=bridge=0,name=<unique>``
  (monitoring on, no bridge). Both must exit 0 within RUN_TIMEOUT.
* ``with-bridge``: the same, but the second run has ``MON=port=0,name=<unique>`` (the device
  launches its bridge, which must exit with it).
* ``forever``: with MON unset it must still run after ALIVE_FOR seconds; then SIGTERM. With
  ``MON=port=0,name=<unique>`` it must print its dashboard URL, the bridge's /api/health must
  report the device online, and after SIGTERM the device must exit (143: the monitor's SIGTERM
  handler, or 0) and its bridge with it.
* ``client-of=PATH``: PATH is started with ``MON=port=0,name=<unique>``; the block runs with MON
  unset and the dashboard URL as ``sys.argv[1]``, and must exit 0; then PATH gets SIGTERM.

Every run: no traceback or resource-tracker complaint on stderr, and no /dev/shm segment left
by it. A python block with a malformed marker, or one that fails, fails its test.

Links: every relative link ``[text](path#anchor)`` in those files must name an existing file
inside the repository, and an anchor into a markdown file must match one of its headings
(GitHub's slugs).
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, START_TIMEOUT, wait_for
from device_agent import layout
from device_agent.shm import attach_segment, close_segment, list_segments, unlink_segment

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON_LANGS = {"python", "py", "python3"}
RUN_TIMEOUT = 60.0      # one plain block, start to exit (2 busy cores, numpy import)
ALIVE_FOR = 2.0         # a "forever" block without MON must still run after this long
URL_RE = re.compile(r"monbridge: dashboard for '([^']+)' at (\S+)")
MARKER_RE = re.compile(r"^<!--\s*(not-run|run)\s*:\s*(.*?)\s*-->$")

@dataclass(frozen=True)
class Block:
    file: str          # relative to the repository
    line: int          # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # the marker comment's text, e.g. "not-run: why" (None: none)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


# -- reading markdown ----------------------------------------------------------------------

FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)")


def is_closing(line: str, fence: str) -> bool:
    """True if ``line`` closes a block opened with ``fence`` (same character, at least as long)."""
    return re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", line) is not None


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block in ``path``, with the marker comment before it (if any)."""
    rel = path.relative_to(REPO).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and not is_closing(lines[i], fence):
            body.append(re.sub(rf"^ {{0,{indent}}}", "", lines[i]))  # the fence's indentation
            i += 1
        i += 1  # the closing fence (or the end of the file)
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = None
        if prev >= 0:
            mm = MARKER_RE.match(lines[prev].strip())
            if mm:
                marker = f"{mm.group(1)}: {mm.group(2)}"
        blocks.append(Block(rel, start + 1, lang, "\n".join(body) + "\n", marker))
    return blocks


def python_blocks() -> list[Block]:
    out = []
    for path in DOCS:
        for b in fenced_blocks(path):
            if b.lang not in PYTHON_LANGS:
                continue
            out.append(b)
    return out


def parse_marker(marker: str | None) -> tuple[str, str]:
    """("plain" | "not-run" | "with-bridge" | "forever" | "client-of", argument); ValueError if malformed."""
    if marker is None:
        return "plain", ""
    kind, _, arg = marker.partition(": ")
    if kind == "not-run":
        if not arg.strip():
            raise ValueError("<!-- not-run: ... --> needs a reason")
        return "not-run", arg
    if arg in ("forever", "with-bridge"):
        return arg, ""
    if arg.startswith("client-of="):
        target = arg[len("client-of="):]
        if not (REPO / target).is_file():
            raise ValueError(f"client-of names {target!r}, which is not a file of the repository")
        return "client-of", target
    raise ValueError(f"unknown marker <!-- {marker} -->: use not-run: REASON, run: with-bridge, "
                     f"run: forever or run: client-of=PATH")


BLOCKS = python_blocks()
RUNNABLE = [b for b in BLOCKS if not (b.marker or "").startswith("not-run")]


def test_markers() -> None:
    problems = []
    for b in BLOCKS:
        try:
            parse_marker(b.marker)
        except ValueError as exc:
            problems.append(f"{b.id}: {exc}")
    assert not problems, "\n".join(problems)


def test_there_are_examples_to_run() -> None:
    assert len(RUNNABLE) >= 10, [b.id for b in RUNNABLE]


# -- running blocks ------------------------------------------------------------------------

def owned_segments(pid: int) -> list[str]:
    """monbridge segments in /dev/shm whose header names ``pid`` as their writer."""
    found = []
    for seg in list_segments():
        try:
            shm = attach_segment(seg)
        except (FileNotFoundError, ValueError, OSError):
            continue
        try:
            if layout.peek_owner(shm.buf) == pid:
                found.append(seg)
        finally:
            close_segment(shm)
    return found


def check_clean(proc, what: str) -> None:
    """No traceback on stderr, no segment left by ``proc`` (removed if there is)."""
    err = "".join(proc.stderr)
    assert "Traceback" not in err and "resource_tracker" not in err, f"{what}: {proc.describe()}"
    left = owned_segments(proc.pid)
    for seg in left:
        unlink_segment(seg)
    assert not left, f"{what}: segments left in /dev/shm (removed): {left}"


def dashboard_url(proc, name: str) -> str:
    def found() -> str | None:
        for m in URL_RE.finditer("".join(proc.stderr)):
            if m.group(1) == name:
                return m.group(2)
        if proc.proc.poll() is not None:
            raise AssertionError(f"exited before printing its dashboard URL: {proc.describe()}")
        return None

    return wait_for(found, START_TIMEOUT, f"the dashboard URL of {name!r}")


def health(url: str) -> dict:
    base = url.split("/?", 1)[0]
    with urllib.request.urlopen(base + "/api/health", timeout=5) as resp:
        return json.load(resp)


def terminate(proc, what: str, codes: tuple[int, ...]) -> None:
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.wait_gone(START_TIMEOUT)
    assert code in codes, f"{what}: exit code {code} after SIGTERM, expected one of {codes}: {proc.describe()}"


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs(block: Block, launch, new_device_name) -> None:
    kind, arg = parse_marker(block.marker)
    if kind in ("plain", "with-bridge"):
        on = "bridge=0" if kind == "plain" else "port=0"
        for mon in (None, f"{on},name={new_device_name()}"):
            what = f"{block.id} with MON={mon!r}"
            proc = launch(block.code, "-", mon=mon, ready=None)
            proc.stop(timeout=RUN_TIMEOUT, check_stderr=False)  # exit code 0, checked by stop()
            check_clean(proc, what)
    elif kind == "forever":
        proc = launch(block.code, "-", mon=None, ready=None)
        try:
            proc.wait(ALIVE_FOR)
        except AssertionError:
            pass  # still running: as it should
        else:
            raise AssertionError(f"{block.id} with MON unset exited: {proc.describe()}")
        terminate(proc, f"{block.id} with MON unset", (-signal.SIGTERM, 0, 128 + signal.SIGTERM))
        check_clean(proc, f"{block.id} with MON unset")
        name = new_device_name()
        proc = launch(block.code, "-", mon=f"port=0,name={name}", ready=None)
        url = dashboard_url(proc, name)
        wait_for(lambda: health(url)["device"]["status"] == "online", what=f"{name!r} online at {url}",
                 ignore=(OSError, ValueError, KeyError))
        terminate(proc, f"{block.id} with a bridge", (128 + signal.SIGTERM, 0))
        check_clean(proc, f"{block.id} with a bridge")
    else:  # client-of
        name = new_device_name()
        device = launch((REPO / arg).read_text(encoding="utf-8"), "-", mon=f"port=0,name={name}", ready=None)
        url = dashboard_url(device, name)
        client = launch(block.code, url, mon=None, ready=None)
        client.stop(timeout=RUN_TIMEOUT, check_stderr=False)
        check_clean(client, f"{block.id} against {arg}")
        warnings = [line for line in client.stdout + client.stderr if line.lower().startswith("warning")]
        assert not warnings, f"{block.id} against {arg} warned: {warnings}"   # e.g. a stale protocol check
        terminate(device, arg, (128 + signal.SIGTERM, 0))
        check_clean(device, arg)


# -- links ---------------------------------------------------------------------------------

LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")


def prose_lines(path: Path, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, text) outside fenced code; inline code spans blanked if ``blank_code``."""
    out = []
    fence = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            m = FENCE_RE.match(line)
            if m:
                fence = m.group(2)
            else:
                out.append((n, re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line) if blank_code else line))
        elif is_closing(line, fence):
            fence = None
    return out


def slugs(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path, blank_code=False):
        h = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if h:
            title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h.group(1))  # [text](url) -> text
            slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for n, line in prose_lines(path):
        found += [(n, m.group(1)) for m in LINK_RE.finditer(line)]
        ref = REF_RE.match(line)
        if ref:
            found.append((n, ref.group(1)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[p.relative_to(REPO).as_posix() for p in DOCS])
def test_links_resolve(doc: Path) -> None:
    problems = []
    for n, target in links(doc):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:...
            continue
        where = f"{doc.relative_to(REPO)}:{n}: {target}"
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc.resolve()
        if path_part.startswith("/"):
            problems.append(f"{where}: use a relative link")
            continue
        if not dest.is_relative_to(REPO.resolve()):
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in slugs(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(REPO.resolve())}")
    assert not problems, "\n".join(problems)
