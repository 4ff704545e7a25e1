"""The monitor ``start()`` returns when MON is off: every call is a cheap no-op.

Standard library only; creates no shared memory, threads or processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable


class DisabledChannel:
    """Stands in for every channel kind; publishing does nothing."""

    count = 0

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind

    def publish(self, *args: Any, **kwargs: Any) -> None:
        pass

    def publish_many(self, records: Any) -> None:
        pass


class DisabledState(Mapping):
    """Keeps what ``update`` is given, in this process only, so code that reads its own
    state back runs the same with MON unset."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def update(self, values: Any = None, /, **more: Any) -> None:
        if values:
            self._values.update(values)
        if more:
            self._values.update(more)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._values))

    def __len__(self) -> int:
        return len(self._values)


class DisabledMonitor:
    """What ``start()`` returns with MON off; satisfies device_agent.api.MonitorAPI."""

    enabled: bool = False
    name: str = ""
    url: str | None = None
    clients: tuple[dict[str, Any], ...] = ()

    def __init__(self) -> None:
        self.state = DisabledState()

    def records(self, name: str, fields: Any, capacity: int = 8192) -> DisabledChannel:
        return DisabledChannel(name, "records")

    def frame(self, name: str, shape: Any, dtype: Any = "f4", slots: int = 3) -> DisabledChannel:
        return DisabledChannel(name, "frame")

    def events(self, name: str, capacity: int = 1024, max_bytes: int = 4096) -> DisabledChannel:
        return DisabledChannel(name, "events")

    def command(self, fn: Callable | None = None, **options: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

    def poll(self, limit: int | None = None) -> int:
        return 0

    def wait_url(self, timeout: float = 0) -> None:
        return None

    def dashboard(self, height: int = 600) -> "DisabledMonitor":
        return self

    def _repr_html_(self) -> str:
        return "<p>monbridge: monitoring is off (set MON=1 to get a dashboard)</p>"

    def close(self) -> None:
        pass

    def __enter__(self) -> "DisabledMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
