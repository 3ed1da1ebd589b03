"""What the runner tells the person running it, always on standard error, never on standard output:
its messages (`log`, through the "experiments" logger: one path for every command and worker), the
study's status line (`STATUS_LINE`: cells done and time left), and a done/total counter for long
loops (reading and decoding images), drawn with rich.progress:

    with progress_counter("reading /data/cats images") as progress:
        load_or_build(..., progress=progress)   # anything that calls progress(done, total)

The callable it yields follows `ProgressCallback`, the protocol experiments.data.images and
experiments.data.cache call: `progress(done, total)`, with `done` counting up to `total`. It may be
called from any thread: each call takes a lock, and a report older than one already shown is
ignored. (experiments.data.images reports from the thread that waits on its decoding pool, not from
the pool's threads; the lock is for callers that do.)

Where it writes: always standard error, never standard output.

- On a terminal: one line that rich rewrites in place (bar, done/total, time elapsed and left;
  a description too long for the width loses its middle), left standing at its last state when
  the block ends, followed by a newline. Messages printed to
  stderr meanwhile appear above it. It starts at the first report, so a block that reports
  nothing (images found in the cache) prints nothing.
- Elsewhere (a log file, CI, `2> file`, TERM=dumb, or TTY_INTERACTIVE=0): a plain line at each
  quarter done, the last one with the time taken:

      reading /data/cats images: 375/1500 (25%)
      ...
      reading /data/cats images: 1500/1500 (100%) in 4.2 s

However the block ends (an exception, Ctrl-C: experiments.interrupts turns SIGTERM into one too),
the display is stopped on the way out: the cursor is shown again, the line ends, and stderr is
no longer redirected through rich. Reports that arrive after that (a straggling thread) are dropped.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.control import Control
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.segment import ControlType
from rich.table import Column

ProgressCallback = Callable[[int, int], None]

# The terminal line: "  {description} {bar} {done}/{total} 0:00:07 elapsed, 0:00:02 left", with one
# column left free. Besides the description, the bar and the counts it takes: the indent, the four
# spaces between those and the times, the two times with their words, and the free column.
FIXED_COLUMNS = 2 + 4 + len("0:00:07 elapsed,") + len("0:00:02 left") + 1
BAR_WIDTH = 20  # at most; narrower on a narrow terminal, down to MINIMUM_BAR
MINIMUM_BAR = 4
SHORT_BAR = 10  # what the bar keeps when the description has to be cut (a third of the room if less)
MINIMUM_DESCRIPTION = 12


def _is_terminal(console: Console, file: IO[str] | None) -> bool:
    """An interactive terminal that can take cursor moves: the stream is a tty (whatever
    FORCE_COLOR says, so `2> file` stays plain) and rich calls it interactive (not TERM=dumb,
    not TTY_INTERACTIVE=0)."""
    stream = file if file is not None else sys.stderr
    try:
        is_tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return is_tty and console.is_interactive


class ProgressCounter:
    """The callable `progress_counter` yields; `close()` ends its display (the with-block does)."""

    def __init__(self, description: str, file: IO[str] | None = None):
        self.description = description
        self._file = file
        self._lock = threading.Lock()
        self._console = Console(file=file) if file is not None else Console(stderr=True)
        self.interactive = _is_terminal(self._console, file)
        self._started = time.monotonic()  # rich's clock too: its elapsed column counts from here
        self._closed = False
        self._done = -1
        self._total = 0
        self._quarters_shown = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            if self._closed or total <= 0:
                return
            done = max(0, min(int(done), int(total)))
            if total != self._total:  # a new count (not expected from one build, but keep it sane)
                self._total, self._done, self._quarters_shown = int(total), -1, 0
            if done <= self._done:
                return  # an older report than one already shown (threads can finish out of order)
            self._done = done
            if self.interactive:
                self._draw(done, total)
            else:
                self._print_quarter(done, total)

    def _draw(self, done: int, total: int) -> None:
        if self._progress is None:
            description, bar_width = self._layout(total)
            self._progress = Progress(
                TextColumn("  {task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                BarColumn(bar_width=bar_width),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("elapsed,"),
                TimeRemainingColumn(),
                TextColumn("left"),
                console=self._console,
                redirect_stdout=False,  # stdout stays stdout; only stderr messages print above the line
                redirect_stderr=True,
                refresh_per_second=4,
            )
            self._task = self._progress.add_task(description, total=total, completed=done)
            self._progress.tasks[-1].start_time = self._started  # elapsed since the block began, as in the log lines
            self._progress.start()
            return
        assert self._task is not None
        self._progress.update(self._task, completed=done, total=total)

    def _layout(self, total: int) -> tuple[str, int]:
        """The description and the bar's width that fit the terminal's width on one line: the bar
        takes what the description leaves (at most BAR_WIDTH, at least SHORT_BAR); a description
        too long for the rest loses its middle ("reading /a/lo…/pets images": the
        verb and the folder's own name stay)."""
        room = self._console.width - FIXED_COLUMNS - len(f"{total}/{total}")  # for the description and the bar
        bar_width = max(MINIMUM_BAR, min(BAR_WIDTH, max(room - len(self.description), min(room // 3, SHORT_BAR))))
        space = max(MINIMUM_DESCRIPTION, room - bar_width)
        if len(self.description) <= space:
            return self.description, bar_width
        head = space // 3
        return self.description[:head] + "…" + self.description[len(self.description) - (space - head - 1):], bar_width

    def _print_quarter(self, done: int, total: int) -> None:
        quarter = 4 * done // total
        if quarter <= self._quarters_shown:
            return
        self._quarters_shown = quarter
        line = f"  {self.description}: {done}/{total} ({100 * done // total}%)"
        if done >= total:
            line += f" in {time.monotonic() - self._started:.1f} s"
        stream = self._file if self._file is not None else sys.stderr
        print(line, file=stream, flush=True)

    def close(self) -> None:
        """Stop the display (idempotent): later reports are ignored."""
        with self._lock:
            self._closed = True
            progress, self._progress = self._progress, None
        if progress is not None:
            progress.stop()


@contextmanager
def progress_counter(description: str, file: IO[str] | None = None) -> Iterator[ProgressCounter]:
    """A thread-safe `ProgressCallback` that shows `description: done/total` on stderr (or
    `file`) while the block runs; see the module's docstring for what a terminal and a log get.
    The total comes with each call, so the caller need not know it beforehand."""
    counter = ProgressCounter(description, file)
    try:
        yield counter
    finally:
        counter.close()


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def estimate_seconds_left(durations: Mapping[str, list[float]], remaining: Iterable[str]) -> float | None:
    """Each remaining cell (by model name) takes the mean time of that model's cells trained so
    far, or of all cells trained so far; None before any cell was trained."""
    remaining = list(remaining)
    if not remaining:
        return 0.0
    every = [seconds for values in durations.values() for seconds in values]
    if not every:
        return None
    overall = statistics.fmean(every)
    return math.fsum(statistics.fmean(durations[name]) if durations.get(name) else overall for name in remaining)


def progress_line(done: int, total: int, elapsed: float, seconds_left: float | None) -> str:
    text = f"Study: {done} of {total} cells done, {format_duration(elapsed)} elapsed"
    if done >= total:
        return text
    if seconds_left is None:
        return text + ", time left estimated once a cell has trained"
    return text + f", about {format_duration(seconds_left)} left"


class StatusLine:
    """On an interactive terminal, one line at the bottom that each `show` rewrites in place, drawn
    by rich (its cursor controls; the text cropped to the terminal's width); other messages (through
    `paused`) print above it. Before Keras prints its epochs, `release` leaves the line as it stands
    and moves to a new one. Elsewhere (logs, CI, `2> file`, TERM=dumb) every `show` is a plain line.
    Not a rich Live display: that would route Keras's epoch lines on stdout through stderr."""

    def __init__(self, stream: Callable[[], Any] = lambda: sys.stderr):
        self._stream = stream
        self.text: str | None = None

    def _console(self) -> Console | None:
        """A rich console that draws on the stream, or None when the stream is not an interactive terminal."""
        stream = self._stream()
        # forced to a terminal so that it draws its cursor controls; _is_terminal still asks the stream
        # itself (isatty) and rich whether the terminal can take them (not TERM=dumb, TTY_INTERACTIVE)
        console = Console(file=stream, force_terminal=True, highlight=False, markup=False, emoji=False)
        return console if _is_terminal(console, stream) else None

    @staticmethod
    def _erase(console: Console) -> None:
        console.control(Control.move_to_column(0), Control((ControlType.ERASE_IN_LINE, 2)))

    def _draw(self, console: Console) -> None:
        self._erase(console)
        # one column short of the width: a character in the last column would leave some terminals about to wrap
        console.print(self.text or "", end="", no_wrap=True, overflow="ellipsis", crop=True, soft_wrap=False,
                      width=max(20, console.width - 1))
        console.file.flush()

    def show(self, text: str) -> None:
        console = self._console()
        if console is None:
            print(text, file=self._stream(), flush=True)
            return
        self.text = text
        self._draw(console)

    @contextmanager
    def paused(self) -> Iterator[None]:
        console = self._console() if self.text is not None else None
        if console is None:
            yield
            return
        self._erase(console)
        console.file.flush()
        try:
            yield
        finally:
            if self.text is not None:
                self._draw(console)

    def release(self) -> None:
        if self.text is not None:
            self._stream().write("\n")
            self._stream().flush()
            self.text = None


STATUS_LINE = StatusLine()


class _StandardError(logging.Handler):
    """Each message on its own line of standard error (looked up at each message, so a caller or a
    test may swap it), printed above the status line. Write errors propagate: a closed stderr or a
    full disk reaches the command line, which turns it into one sentence."""

    def emit(self, record: logging.LogRecord) -> None:
        with STATUS_LINE.paused():
            print(self.format(record), file=sys.stderr, flush=True)


#: The one path every command and worker of the runner logs through: `log(message)`. A caller may
#: add a handler of its own (the tests do, to read the messages).
LOGGER = logging.getLogger("experiments")
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # libraries that configure the root logger (MLflow) do not print it twice
LOGGER.addHandler(_StandardError())


def log(message: str) -> None:
    """One message for the person running the study, on standard error."""
    LOGGER.info(message)


def format_size(byte_count: int) -> str:
    """A byte count in the unit that fits it: "1000 bytes", "12.5 KiB", "3.2 MiB", "1.8 GiB", "2.0 TiB"."""
    if byte_count < 1024:
        return f"{byte_count} bytes"
    for unit, power in (("KiB", 1), ("MiB", 2), ("GiB", 3)):
        if byte_count < 1024 ** (power + 1):
            return f"{byte_count / 1024 ** power:.1f} {unit}"
    return f"{byte_count / 1024 ** 4:.1f} TiB"
