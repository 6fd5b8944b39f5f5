"""Who writes a cache directory: one process at a time prepares a given cache, and the temporary directories of
preparations that died are removed by the next preparation.

:func:`ctr.data.prepare.prepare_data` writes into ``.tmp-<name>-<key>-<pid>-<random>/`` and renames it into place
at the end. Two processes asked for the same cache at once (ablation workers started together) would both
prepare it; :class:`Claim` makes the later one wait for the earlier one and then reuse its cache. A preparation
killed outright (SIGKILL, the out-of-memory killer) cannot remove its temporary directory; the owner recorded in
it (:func:`write_owner`) lets :func:`remove_stale_temp_dirs` remove it once that owner is provably dead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # no flock (Windows): preparations of one cache may run side by side; the rename stays atomic
    fcntl = None

TEMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner.json"


class Claim:
    """An exclusive lock on the file ``lock``, held from :meth:`acquire` to :meth:`release`; the file exists only
    while it is held.

    While another process holds it, :meth:`acquire` calls ``waiting`` once with that process's pid (as the holder wrote
    it) and blocks until the lock is free. The lock is the kernel's (``flock``), released when its holder exits
    however it exits, so a killed holder never blocks the next one (its file stays, and is reused). A holder
    removes the file before releasing it; a process that was waiting on the removed file then finds that its
    file is no longer the one at ``lock`` and locks that one instead, so two processes never both hold it.

    Raises:
        OSError: (from :meth:`acquire`) the lock file cannot be created, e.g. its directory is not writable.
    """

    def __init__(self, lock: Path, waiting: Callable[[str], None]) -> None:
        self.lock = lock
        self.waiting: Callable[[str], None] | None = waiting
        self.fd = -1

    def acquire(self) -> None:
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = fcntl is not None and self._lock(fd)
                if not locked or _same_file(fd, self.lock):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed it on release: lock the file now at that path
        self.fd = fd
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())

    def _lock(self, fd: int) -> bool:
        """Lock ``fd``, waiting for its holder; False when the file system has no locks (some network file systems:
        preparations may then run side by side, and the rename keeps the cache whole)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.waiting is not None:
                self.waiting(os.read(fd, 32).decode("ascii", "replace").strip() or "unknown")
                self.waiting = None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                return False
        except OSError:
            return False
        return True

    def release(self) -> None:
        try:
            self.lock.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` (and not one removed from there)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


def write_owner(directory: Path) -> None:
    """Record this process (pid and host) as the owner of the temporary directory ``directory``."""
    (directory / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Remove the temporary directories under ``root`` whose recorded owner is a process of this host that no
    longer runs; returns them. Directories of live processes, of other hosts (whose processes this host cannot
    see) and without a readable owner are left alone: only a provably dead owner's directory is removed."""
    if os.name != "posix":  # os.kill(pid, 0) probes a process only on POSIX (on Windows it terminates it)
        return []
    host = socket.gethostname()
    removed = []
    for directory in sorted(root.glob(f"{TEMP_PREFIX}*")):
        owner = _owner(directory)
        if owner is None or owner[1] != host or _alive(owner[0]):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _owner(directory: Path) -> tuple[int, str] | None:
    """(pid, host) from a temporary directory's owner file, or None when it is missing or malformed."""
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid, host = (owner.get("pid"), owner.get("host")) if isinstance(owner, dict) else (None, None)
    # a pid <= 0 names process groups (or every process) to os.kill: only a real pid is a valid owner
    if type(pid) is not int or pid <= 0 or not isinstance(host, str):
        return None
    return pid, host


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
