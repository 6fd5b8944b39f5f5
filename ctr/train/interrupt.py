"""Ctrl-C and ``kill`` (SIGINT, SIGTERM) during training: finish the step, write a checkpoint, exit cleanly."""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; the message says how to resume.

    Attributes:
        signum: the signal received; the process should exit with ``128 + signum``.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """While entered, SIGINT and SIGTERM set :attr:`signum` instead of raising; the training loop checks it after
    each step. A second signal raises KeyboardInterrupt at once (for a run stuck outside the loop).

    Handlers can only be installed from the main thread; elsewhere this does nothing and signals act as usual.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
