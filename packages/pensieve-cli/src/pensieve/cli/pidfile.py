"""The pid file that lets ``stop`` and ``status`` find a running server.

Default location: ``$XDG_CACHE_HOME/pensieve/pensieve-<port>.pid`` (``~/.cache/pensieve/…`` when
``XDG_CACHE_HOME`` is unset); ``server.pid_file`` overrides it. One file per port, so servers
on different ports do not collide.
"""

from __future__ import annotations

import os
from pathlib import Path

from pensieve.core.config import ServerSettings

__all__ = ["PidFile", "default_pid_path", "pid_path", "process_alive"]


def default_pid_path(port: int) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pensieve" / f"pensieve-{port}.pid"


def pid_path(settings: ServerSettings) -> Path:
    return Path(settings.pid_file).expanduser() if settings.pid_file else default_pid_path(settings.port)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class PidFile:
    """The pid file of this process: written on entry, removed on exit if it is still ours."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int | None:
        """The pid recorded in the file, or None when there is no readable file."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running_pid(self) -> int | None:
        """The recorded pid if that process is still alive."""
        pid = self.read()
        return pid if pid is not None and process_alive(pid) else None

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")

    def __exit__(self, *_exc: object) -> None:
        if self.read() == os.getpid():
            self.path.unlink(missing_ok=True)
