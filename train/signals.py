"""How a run stops early. On SIGINT/SIGTERM at a safe point: the first signal asks, the loop stops at its next
step boundary (saving last.pt); a second one stops at once. On a divergence: TrainingDiverged."""

from __future__ import annotations

import signal
import threading


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run; `signum` gives the exit code 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or infinite."""


class StopRequests:
    """While active, SIGINT and SIGTERM only set `signum`, which the step loop checks between steps; a second
    signal stops at once (raising TrainingInterrupted wherever the run is: checkpoints are written atomically,
    so last.pt is then the previous one). Handlers can be set in the main thread only; elsewhere this does
    nothing and signals keep their usual effect."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise TrainingInterrupted(f"stopped at once by a second {signal.Signals(signum).name}, without "
                                      "saving; last.pt holds the previous checkpoint", signum)
        self.signum = signum  # no I/O here: the loop logs when it reaches the next step boundary

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
