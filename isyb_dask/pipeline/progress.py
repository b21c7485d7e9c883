"""Progress lines that read well in a terminal and in a batch log.

Dask's progress bars write carriage returns into SLURM logs and do nothing under the
distributed scheduler (ECOSYSTEM §1.3), so progress is reported as plain, periodic lines:
``[isyb 00:01:12] 7/20 subjects done (1 failed, 2 partial), ~00:02:10 left``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Progress"]


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Progress:
    """Count finished subjects and print a line per event (or at most every ``interval`` s).

    Parameters
    ----------
    total
        Subjects to process in this run.
    skipped
        Subjects already complete from an earlier run (counted as done).
    write
        Where lines go (default: stdout, flushed).
    interval
        Minimum seconds between lines when many subjects finish at once; the last subject
        always prints.
    """

    total: int
    skipped: int = 0
    write: Callable[[str], None] | None = None
    interval: float = 0.0
    done: int = 0
    failed: int = 0
    partial: int = 0
    _start: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def _emit(self, text: str) -> None:
        if self.write is not None:
            self.write(text)
        else:
            print(text, file=sys.stdout, flush=True)

    def message(self, text: str) -> None:
        """Print a free-form line with the elapsed-time prefix."""
        self._emit(f"[isyb {_hms(time.monotonic() - self._start)}] {text}")

    def update(self, subject: str, status: str, error: str = "") -> None:
        """Record one finished subject and print the progress line."""
        self.done += 1
        if status == "partial":
            self.partial += 1
        elif status != "ok":
            self.failed += 1
        now = time.monotonic()
        finished = self.done + self.skipped
        elapsed = now - self._start
        left = ""
        if self.done and finished < self.total:
            rate = elapsed / self.done
            left = f", ~{_hms(rate * (self.total - finished))} left"
        if status == "partial":
            self.message(f"{subject} PARTIAL: {error}")
        elif status != "ok":
            self.message(f"{subject} {'INTERNAL ERROR' if status == 'error' else 'FAILED'}: {error}")
        if now - self._last >= self.interval or finished == self.total or status != "ok":
            self._last = now
            self.message(
                f"{finished}/{self.total} subjects done ({self.failed} failed"
                + (f", {self.partial} partial" if self.partial else "")
                + (f", {self.skipped} already complete" if self.skipped else "")
                + f"){left}"
            )
