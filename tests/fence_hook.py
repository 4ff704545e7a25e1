"""FenceHook: stands in for a core module's ``fence`` in unit tests of one function.

Patched in with ``mock.patch.object(module, "fence", FenceHook(at, action))``, it runs
``action`` once, at the ``at``-th fence, so a test can make "the writer" act exactly between
two steps of a reader (each test module says which fence falls where).
"""

from __future__ import annotations

from typing import Callable


class FenceHook:
    def __init__(self, at: int, action: Callable[[], None]) -> None:
        self.at, self.action, self.calls, self.fired = at, action, 0, False

    def __call__(self) -> None:
        if self.fired:
            return
        self.calls += 1
        if self.calls == self.at:
            self.fired = True
            self.action()
