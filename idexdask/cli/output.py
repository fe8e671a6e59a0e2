"""Terminal output of the commands: lines, a progress bar, run summaries.

What the commands write to the terminal is their user interface, not logging:
it goes to standard output, line by line, flushed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressBar", "duration", "echo", "print_summary"]


def echo(text: str = "") -> None:
    """Write one line to standard output (flushed)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` for an unknown duration."""
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{hours}:{minutes}" if hours else minutes


class ProgressBar:
    """Events done of total, rate and ETA: a bar on a terminal, else plain lines.

    Parameters
    ----------
    stream : file, optional
        Where to write (default standard output).
    min_interval : float
        Seconds between two plain lines (a terminal's bar is redrawn each time).
    """

    def __init__(self, stream: TextIO | None = None, min_interval: float = 2.0) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.min_interval = min_interval
        self.last = -float("inf")

    def __call__(self, progress: Any) -> None:
        """Show a :class:`~idexdask.pipeline.summary.Progress`."""
        now = time.monotonic()
        finished = progress.units_done + progress.units_failed >= progress.units_todo
        if not self.tty and now - self.last < self.min_interval and not finished:
            return
        self.last = now
        total = max(progress.events_total, 1)
        fraction = progress.events_done / total
        text = (
            f"{progress.events_done:>9,}/{progress.events_total:,} events "
            f"({fraction:6.1%})  {progress.rate:8,.0f} ev/s  ETA {duration(progress.eta_s)}"
            + (f"  failed units: {progress.units_failed}" if progress.units_failed else "")
        )
        if self.tty:
            width = 30
            filled = int(width * fraction)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}")
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(f"progress: {text}\n")
        self.stream.flush()


def print_summary(summary: Any, title: str) -> None:
    """A :class:`~idexdask.pipeline.summary.RunSummary`, one fact a line."""
    echo(f"== {title} ==")
    echo(f"store              : {summary.store}")
    echo(f"state              : {summary.state}")
    echo(f"events in store    : {summary.events_done:,} of {summary.events_total:,}")
    echo(f"units              : {summary.units_done} of {summary.units_total} done"
         + (f" ({summary.units_skipped} already done before this run)"
            if summary.units_skipped else ""))
    if summary.events_this_run or summary.elapsed_s:
        line = (f"this run           : {summary.events_this_run:,} events "
                f"in {summary.elapsed_s:.1f} s")
        if summary.elapsed_s > 0 and summary.events_this_run:
            line += f" ({summary.rate:,.0f} events/s"
            if summary.workers:
                line += f", {summary.workers} workers"
            line += ")"
        echo(line)
    groups = getattr(summary, "campaign_calibration", None)
    if groups is not None:
        joint = sum(1 for g in groups.values()
                    if g.get("calibrated") or g.get("high_voltage_settings"))
        echo(f"campaign step      : done, {joint} of {len(groups)} input group(s) "
             "calibrated jointly")
    for path in summary.empty_inputs:
        echo(f"no science events  : {path}")
    echo(f"failures           : {len(summary.failures)}")
    for failure in summary.failures:
        echo(f"  FAILED {failure['uid']}: {failure['reason']}")
