"""Stopping a run cleanly when the machine asks: SIGTERM (a scheduler's preemption) or SIGINT (Ctrl-C).

While `StopSignals` is active, either signal only sets `requested`; the training loop checks it between steps,
writes a checkpoint and raises `Preempted`, and the command line exits with PREEMPTED_EXIT. `--resume` then
continues exactly where the run stopped.

A repeat of the signal within REPEAT_GRACE_S is ignored: a terminal's Ctrl-C reaches a sweep and its points
together, and a sweep also passes the signal on. A later repeat stops at once (KeyboardInterrupt), without a
checkpoint, for someone who will not wait.
"""

from __future__ import annotations

import signal
import threading
import time

PREEMPTED_EXIT = 75  # EX_TEMPFAIL in sysexits.h: stopped early on request; run again (with --resume) to finish
REPEAT_GRACE_S = 2.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A run stopped on SIGTERM or SIGINT after writing a checkpoint: `what` says where, `advice` how to go on."""

    def __init__(self, what: str, advice: str = "run the same command with --resume to continue") -> None:
        super().__init__(what, advice)  # both in args, so it crosses process boundaries (pickle) whole
        self.what, self.advice = what, advice

    def __str__(self) -> str:
        return f"{self.what}; {self.advice}"


class StopSignals:
    """Context manager: SIGTERM and SIGINT set `requested` (the signal's name) instead of ending the process.

    Only the main thread can take signals; elsewhere this does nothing (the process keeps Python's handlers).
    `on_signal(signum)` is called from the handler too (a sweep passes the signal to its points with it)."""

    def __init__(self, on_signal=None) -> None:
        self.requested: str | None = None
        self.on_signal = on_signal
        self._first = 0.0
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is None:
            self.requested, self._first = signal.Signals(signum).name, time.monotonic()
            if self.on_signal is not None:
                self.on_signal(signum)
        elif time.monotonic() - self._first > REPEAT_GRACE_S:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
