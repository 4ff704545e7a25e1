"""Views: the files in the specs directory, each a dashboard tab.

Standard library only. ``ViewCatalog.scan()`` is cheap (one ``os.scandir`` and a stat per
file) and is called about twice a second by the relay loop; it reloads only files whose
size or mtime changed and reports whether anything changed, so the server can push the
new list to every open page (a dropped-in file becomes a tab within about a second).

Files: ``NAME.vl.json`` (a Vega-Lite spec) and ``NAME.scene.json`` (a three.js scene, see
docs/scenes.md). A file that is not valid JSON, or not an object, is still listed, with
``error`` set to a readable message, so its tab can say what is wrong instead of staying blank.

View entry (JSON, as sent in the ``views`` event and by GET /api/views):
    {"id": "temps", "file": "temps.vl.json", "kind": "vega-lite" | "scene",
     "title": "Temperatures", "order": 10, "spec": {...} | null, "error": null | "message"}
Title: ``usermeta.title``, else a string ``title`` in the spec, else the file stem.
Order: ``usermeta.order`` (a number), else 1000; ties sort by file name.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bridge")
KINDS = {".vl.json": "vega-lite", ".scene.json": "scene"}
MAX_SPEC_BYTES = 1024 * 1024
DEFAULT_ORDER = 1000


@dataclass
class _Loaded:
    stamp: tuple[int, int]
    view: dict[str, Any]


def view_kind(filename: str) -> tuple[str, str] | None:
    """(id, kind) for a view file name, or None if it is not one."""
    for suffix, kind in KINDS.items():
        if filename.endswith(suffix) and len(filename) > len(suffix) and not filename.startswith("."):
            return filename[: -len(suffix)], kind
    return None


def load_view(filename: str, text: str | None, error: str | None = None) -> dict[str, Any]:
    """Build a view entry from a file's text (sans-I/O; ``error`` for an unreadable file)."""
    view_id, kind = view_kind(filename) or (filename, "unknown")
    view: dict[str, Any] = {"id": view_id, "file": filename, "kind": kind, "title": view_id,
                            "order": DEFAULT_ORDER, "spec": None, "error": error}
    if error is not None or text is None:
        return view
    try:
        spec = json.loads(text)
    except ValueError as exc:
        view["error"] = f"{filename} is not valid JSON: {exc}"
        return view
    if not isinstance(spec, dict):
        view["error"] = f"{filename} must hold a JSON object (a {kind} spec), not {type(spec).__name__}"
        return view
    meta = spec.get("usermeta") if isinstance(spec.get("usermeta"), dict) else {}
    title = meta.get("title", spec.get("title"))
    if isinstance(title, str) and title:
        view["title"] = title
    elif isinstance(title, dict) and isinstance(title.get("text"), str):
        view["title"] = title["text"]
    order = meta.get("order")
    if isinstance(order, (int, float)) and not isinstance(order, bool):
        view["order"] = order
    if kind == "scene" and not isinstance(spec.get("objects"), list):
        view["error"] = f"{filename}: a scene needs an 'objects' list (see docs/scenes.md)"
        return view
    view["spec"] = spec
    return view


class ViewCatalog:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._loaded: dict[str, _Loaded] = {}  # file name -> last load
        self.version = 0

    def scan(self) -> bool:
        """Re-read changed, new and removed files; return True if the list changed."""
        seen: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if view_kind(entry.name) and entry.is_file():
                        st = entry.stat()
                        seen[entry.name] = (st.st_mtime_ns, st.st_size)
        except (FileNotFoundError, NotADirectoryError):
            pass
        changed = False
        for name in list(self._loaded):
            if name not in seen:
                del self._loaded[name]
                log.info("view %s removed", name)
                changed = True
        for name, stamp in seen.items():
            old = self._loaded.get(name)
            if old is not None and old.stamp == stamp:
                continue
            view = self._read(name, stamp[1])
            if view["error"]:
                log.warning("view %s: %s", name, view["error"])
            elif old is None:
                log.info("view %s added", name)
            self._loaded[name] = _Loaded(stamp, view)
            changed = True
        if changed:
            self.version += 1
        return changed

    def _read(self, name: str, size: int) -> dict[str, Any]:
        if size > MAX_SPEC_BYTES:
            return load_view(name, None, f"{name} is {size} bytes; view files are limited to {MAX_SPEC_BYTES}")
        try:
            with open(os.path.join(self.directory, name), encoding="utf-8") as f:
                return load_view(name, f.read())
        except (OSError, UnicodeDecodeError) as exc:
            return load_view(name, None, f"{name} cannot be read: {exc}")

    def views(self) -> list[dict[str, Any]]:
        items = [loaded.view for loaded in self._loaded.values()]
        return sorted(items, key=lambda v: (v["order"], v["file"]))
