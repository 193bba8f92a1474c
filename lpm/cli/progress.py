"""A rich progress bar that appears with the first step, so an input error prints alone."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn


class StepBar:
    """``with StepBar("generating", "steps") as bar: work(progress=bar)``.

    Calling the bar with ``(done, total)`` (and optionally a description) draws it; a run that
    fails before its first step leaves no bar behind.
    """

    def __init__(self, label: str, unit: str, *, columns: tuple[ProgressColumn, ...] = (),
                 console=None) -> None:  # fmt: skip
        self._bar = Progress(
            TextColumn(label),
            BarColumn(),
            *(
                columns
                or (TextColumn("{task.completed}/{task.total} " + unit), TimeRemainingColumn())
            ),  # fmt: skip
            console=console,
        )
        self._task = None

    def __call__(self, done: int, total: int | None, description: str = "") -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)
        self._bar.update(self._task, completed=done, total=total, description=description)

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *_exc) -> None:
        if self._task is not None:
            self._bar.stop()
