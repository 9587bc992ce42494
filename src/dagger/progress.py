"""What a run shows while it runs: a progress bar in a terminal, log lines everywhere else.

In a terminal (stderr is a TTY) a run draws a tqdm bar. Elsewhere (``nohup``, a Slurm log, a
CI job, a notebook kernel) a bar is noise, so a run logs through :mod:`logging`, on the logger
``dagger.progress`` at INFO:

* one line per computed state: its short id, its recipe, the seconds it took, and how far the
  run is (``computed 3fa2c1d4e5f6 Train(epochs=3) in 12.4 s [5/40]``); one per Function result;
* a summary every ``interval`` seconds (``40 to do: 5 computed, 0 failed, 1 Function result,
  2:05 elapsed``), from a background thread, so a long state still shows the run is alive;
* a last summary when the run ends.

When nothing in the process configured logging (no handler on ``dagger.progress``, ``dagger``
or the root logger), a run attaches a handler writing to stderr for its duration, so the lines
appear in a plain script's log; where logging is configured, the lines go where it says (and
its levels apply: ``logging.getLogger("dagger.progress").setLevel(logging.WARNING)`` silences
them).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Literal

from .errors import InvalidArgumentError

__all__ = ["DEFAULT_INTERVAL", "Progress", "progress_mode"]

#: Seconds between two summaries in the log (``Experiment.run(log_interval=...)``).
DEFAULT_INTERVAL = 60.0

logger = logging.getLogger("dagger.progress")

Mode = Literal["bar", "log"] | None


def progress_mode(progress: bool | str | None) -> Mode:
    """How a run shows progress: ``"bar"``, ``"log"`` or None (nothing).

    Args:
        progress: None: a bar when stderr is a terminal, log lines otherwise. True: a bar.
            ``"log"``: log lines. False: nothing.

    Raises:
        InvalidArgumentError: Another value.
    """
    if progress is None:
        return "bar" if _isatty(sys.stderr) else "log"
    if progress is True:
        return "bar"
    if progress is False:
        return None
    if progress == "log":
        return "log"
    raise InvalidArgumentError(
        f'progress={progress!r} is not a choice: pass True (a progress bar), "log" (one log '
        "line per computed state), False (nothing) or None (a bar in a terminal, log lines "
        "elsewhere).",
        value=repr(progress),
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """The progress display of one run (a bar, log lines, or nothing).

    Args:
        mode: From :func:`progress_mode`.
        total: How many states and Function results the run has to compute.
        counts: Called for the current counts: ``(computed, failed, function results,
            Function failures)``.
        interval: Seconds between two summaries in log mode (0 or less: after every line).
    """

    def __init__(
        self,
        mode: Mode,
        total: int,
        counts: Any,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.mode = mode if total > 0 else None
        self.total = total
        self.counts = counts
        self.interval = interval
        self.done = 0
        self.started = time.perf_counter()
        self.bar: Any = None
        self._handler: logging.Handler | None = None
        self._level = logging.NOTSET
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_summary = self.started

    # -- the run's life --------------------------------------------------------------------------

    def open(self) -> None:
        """Start showing progress (a bar, or log lines and the summary thread)."""
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="dagger", unit="state", leave=False)
        elif self.mode == "log":
            if not logger.hasHandlers():  # its own, dagger's and the root logger's
                # Nothing configured logging: a plain script under nohup or Slurm still gets
                # its progress in its log.
                self._handler = logging.StreamHandler(sys.stderr)
                self._handler.setFormatter(
                    logging.Formatter("%(asctime)s dagger: %(message)s", "%Y-%m-%d %H:%M:%S")
                )
                logger.addHandler(self._handler)
                self._level = logger.level
                logger.setLevel(logging.INFO)
            logger.info("run started: %d to do", self.total)
            if self.interval > 0:
                self._thread = threading.Thread(
                    target=self._summaries, name="dagger-progress", daemon=True
                )
                self._thread.start()

    def close(self, report: Any = None) -> None:
        """Stop showing progress; in log mode, log the run's report as the last line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.mode == "log":
            if report is not None:
                logger.info("run finished: %s", report)
            if self._handler is not None:
                logger.removeHandler(self._handler)
                logger.setLevel(self._level)
                self._handler = None

    # -- events ----------------------------------------------------------------------------------

    def tick(self, amount: int = 1) -> None:
        """``amount`` more states or results are done (or failed)."""
        self.done += amount
        if self.bar is not None:
            self.bar.update(amount)

    def computed(self, state_id: str, recipe: str, seconds: float | None) -> None:
        """A state was computed and stored (in this process or by a worker)."""
        if self.mode == "log":
            took = f" in {seconds:.1f} s" if seconds is not None else ""
            logger.info(
                "computed %s %s%s [%d/%d]", state_id[:12], recipe, took, self.done, self.total
            )
            self._maybe_summary()

    def function(self, name: str, state_id: str, seconds: float) -> None:
        """A Function's result was recorded."""
        if self.mode == "log":
            logger.info(
                "Function %s on %s in %.1f s [%d/%d]",
                name,
                state_id[:12],
                seconds,
                self.done,
                self.total,
            )
            self._maybe_summary()

    # -- summaries -------------------------------------------------------------------------------

    def summary(self) -> str:
        computed, failed, functions, function_failures = self.counts()
        parts = [f"{computed} computed", f"{failed} failed"]
        if functions or function_failures:
            parts.append(f"{functions} Function results")
        if function_failures:
            parts.append(f"{function_failures} Function failures")
        elapsed = _clock(time.perf_counter() - self.started)
        return f"{self.done} of {self.total} done: {', '.join(parts)}; {elapsed} elapsed"

    def _maybe_summary(self) -> None:
        with self._lock:
            now = time.perf_counter()
            if now - self._last_summary < self.interval:
                return
            self._last_summary = now
        logger.info("%s", self.summary())

    def _summaries(self) -> None:
        while not self._stop.wait(self.interval):
            self._maybe_summary()
