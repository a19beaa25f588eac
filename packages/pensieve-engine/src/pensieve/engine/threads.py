"""Ending a thread that ran MLX without aborting the process."""

from __future__ import annotations

import os
import sys
import threading
import time

__all__ = ["join_mlx_thread"]


def join_mlx_thread(thread: threading.Thread, timeout: float | None = None) -> None:
    """Join ``thread``, then wait until the OS has finished it too.

    ``join`` returns before the thread runs its C++ thread-local destructors, and MLX's (left by
    ``mx.async_eval``) take the GIL: if the interpreter is finalizing by then, the thread is
    ended mid-destructor and the process aborts ("terminate called without an active
    exception"). Linux lists a process's live threads in /proc; elsewhere there is no such view,
    so the thread gets a short moment.
    """
    thread.join(timeout)
    if thread.is_alive():
        return
    if sys.platform != "linux" or thread.native_id is None or not os.path.isdir("/proc/self/task"):
        time.sleep(0.05)
        return
    task = f"/proc/self/task/{thread.native_id}"
    deadline = time.monotonic() + 5.0
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.005)
