"""The bridge's tasks end quietly when the bridge closes under them (threading mode, in-process).

A real Bridge object and its real reply task on a thread of this process; no device (its
link waits for one) and no server. Linux: it reads /proc to know the task is blocked.
"""

from __future__ import annotations

import threading
from pathlib import Path

from bridge.server import Bridge, Options
from conftest import TIMEOUT, wait_for


def _blocked_in_a_syscall(thread: threading.Thread) -> bool:
    with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
        return f.read().split()[0] != "running"


def test_the_reply_task_ends_without_an_error_when_close_shuts_its_doorbell(tmp_path: Path) -> None:
    """serve() closes the bridge once its server has stopped; the reply task may still be
    waiting on the doorbell that close() shuts. It must end, not die with a traceback
    (seen once in `make test`: "Exception in thread (reply_loop)")."""
    bridge = Bridge(Options(attach="t-close-nobody", async_mode="threading", specs=str(tmp_path),
                            static=str(tmp_path), token="t"))
    errors: list[BaseException] = []

    def reply_task() -> None:
        try:
            bridge.reply_loop()
        except BaseException as exc:   # what threading would print as "Exception in thread"
            errors.append(exc)

    task = threading.Thread(target=reply_task, daemon=True)
    task.start()
    wait_for(lambda: _blocked_in_a_syscall(task), TIMEOUT, "the reply task to wait on its doorbell")
    bridge.request_stop()
    bridge.close()
    task.join(TIMEOUT)
    assert not task.is_alive(), "the reply task did not end"
    assert errors == [], repr(errors)
