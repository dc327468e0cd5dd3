"""Progress bars of long commands (submit, submit --wait, eval), on stderr so stdout stays the result."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class _Progress(Progress):
    def stop(self) -> None:
        if self.tasks or self.disable:
            super().stop()
            return
        # Stopped before its first task (a service was down): leave nothing, not even rich's empty
        # line for logs, above the one-line error.
        self.live.transient = True
        self.live.stop()


def progress_bar(console: Console) -> Progress:
    """A bar with a spinner, a description, done/total and the time spent, drawn on ``console``."""
    return _Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
