"""Where the bridge finds the built web UI and the default specs, wherever it is installed.

The web UI is built into ``bridge/static`` (webui/build.mjs) and ships there. The default
specs are the repository's ``specs/``: an installed wheel carries them as
``bridge/default_specs`` (pyproject.toml maps them there); a checkout, editable install
included, reads them from the repository. Imports only the standard library.
"""

from __future__ import annotations

import os
from importlib.resources import files

# the repository root, when this file sits in a checkout's bridge/ directory
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find(packaged: str, checkout: str) -> str:
    inside = files("bridge").joinpath(packaged)
    if inside.is_dir():
        return os.fspath(inside)  # a directory on disk: wheels are installed unpacked
    return os.path.join(_CHECKOUT, checkout)


def static_dir() -> str:
    """The built web UI: index.html, app.js, app.css."""
    return os.fspath(files("bridge").joinpath("static"))


def default_specs_dir() -> str:
    """The views monbridge ships with, used when there is no ./specs directory."""
    return _find("default_specs", "specs")


def specs_dir(given: str | None) -> str:
    """The specs directory to serve: ``given`` (--specs / MON=specs=...), else ./specs if
    it exists, else the default specs."""
    if given:
        return os.path.abspath(given)
    if os.path.isdir("specs"):
        return os.path.abspath("specs")
    return default_specs_dir()
