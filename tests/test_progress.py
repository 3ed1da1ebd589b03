"""experiments.console: the done/total counter shown while images are read and decoded.

A log (not a terminal) gets a plain line per quarter and a final one; a terminal gets one line
that rich rewrites in place; both on stderr only; reports may come from several threads; the
display stops cleanly when the block ends by an exception or Ctrl-C.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time

import pytest

from experiments.console import progress_counter

LOG_LINE = re.compile(r"  reading /data/pets images: (\d+)/(\d+) \((\d+)%\)( in \d+\.\d s)?")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class SlowLog(io.StringIO):
    """A log stream that yields to other threads between characters, so two writers that are not
    serialised mix their text (print writes the line and its newline in two calls)."""

    def write(self, text: str) -> int:
        for character in text:
            super().write(character)
            time.sleep(0)
        return len(text)


@pytest.fixture
def terminal_environment(monkeypatch):
    """What rich reads to decide it drives an interactive terminal (and how wide it is)."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "120")


def log_lines(text: str) -> list[re.Match[str]]:
    lines = text.splitlines()
    matches = [LOG_LINE.fullmatch(line) for line in lines]
    assert all(matches), f"lines that are not progress lines: {[line for line, match in zip(lines, matches) if not match]}"
    return matches


def refresh_threads(settle: float = 0.0) -> list[threading.Thread]:
    """rich's threads that redraw a live display; `settle`: give stopped ones that long to end
    (rich signals its thread to stop and does not wait for it)."""
    threads = [thread for thread in threading.enumerate() if type(thread).__name__ == "_RefreshThread"]
    for thread in threads:
        thread.join(settle)
    return [thread for thread in threads if thread.is_alive()]


def test_a_log_gets_a_line_per_quarter_and_a_final_line():
    log = io.StringIO()
    with progress_counter("reading /data/pets images", file=log) as progress:
        for done in range(0, 1001, 50):
            progress(done, 1000)
        progress(1000, 1000)  # a repeated final report prints nothing more
    matches = log_lines(log.getvalue())
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in matches] == [(250, 1000, 25), (500, 1000, 50), (750, 1000, 75), (1000, 1000, 100)]
    assert [bool(m[4]) for m in matches] == [False, False, False, True], "the time taken is on the final line only"


def test_reports_that_jump_print_the_quarter_they_reach_once():
    log = io.StringIO()
    with progress_counter("reading /data/pets images", file=log) as progress:
        for done in (50, 100, 120):  # what a 120-image folder reports (every 50 images, and the last)
            progress(done, 120)
    assert [(int(m[1]), int(m[3])) for m in log_lines(log.getvalue())] == [(50, 41), (100, 83), (120, 100)]


def test_the_lines_go_to_stderr_and_nothing_to_stdout(capfd):
    with progress_counter("reading /data/pets images") as progress:
        for done in range(10, 101, 10):
            progress(done, 100)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert len(log_lines(captured.err)) == 4


def test_a_block_without_reports_prints_nothing(capfd, terminal_environment, monkeypatch):
    """Images found in the decoded-image cache: nothing is decoded, so no counter appears."""
    with progress_counter("reading /data/pets images"):
        pass
    assert capfd.readouterr() == ("", "")
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_counter("reading /data/pets images"):
        pass
    assert terminal.getvalue() == ""


def test_reports_from_many_threads_give_whole_lines_in_order():
    log = SlowLog()
    total = 8 * 250
    with progress_counter("reading /data/pets images", file=log) as progress:
        counter = iter(range(1, total + 1))
        counter_lock = threading.Lock()
        start = threading.Barrier(8)

        def report() -> None:
            start.wait()
            while True:
                with counter_lock:
                    done = next(counter, None)
                if done is None:
                    return
                progress(done, total)

        threads = [threading.Thread(target=report) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    matches = log_lines(log.getvalue())
    assert [int(m[3]) // 25 for m in matches] == [1, 2, 3, 4], "one line per quarter, in order"
    assert matches[-1][1] == matches[-1][2] == str(total)


def test_a_terminal_gets_one_line_rewritten_in_place_on_stderr(terminal_environment, monkeypatch):
    terminal, out = FakeTerminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", out)
    with progress_counter("reading /data/pets images") as progress:
        assert progress.interactive
        for done in range(50, 401, 50):
            progress(done, 400)
            print("a message printed meanwhile", file=sys.stderr)  # shows above the line
        print("a result on stdout")  # stays on stdout (rich does not take it over)
    text = terminal.getvalue()
    assert out.getvalue() == "a result on stdout\n", "nothing else on stdout"
    assert "a result" not in text
    assert sys.stderr is terminal, "stderr is no longer redirected through rich"
    assert "\r" in text and "\x1b[2K" in text, "the line is rewritten in place"
    assert text.count("a message printed meanwhile") == 8
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.rsplit("\r", 1)[-1])
    assert re.fullmatch(r"  reading /data/pets images \S+ 400/400 \d+:\d\d:\d\d elapsed, 0:00:00 left\n", final), repr(final)
    assert text.endswith("\x1b[?25h"), "the cursor is shown again"
    assert not refresh_threads(settle=2.0)


def test_reports_from_threads_on_a_terminal(terminal_environment):
    terminal = FakeTerminal()
    with progress_counter("reading /data/pets images", file=terminal) as progress:
        threads = [threading.Thread(target=lambda start=start: [progress(done, 800) for done in range(start, 801, 8)]) for start in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert "800/800" in terminal.getvalue().rsplit("\r", 1)[-1]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interruption_stops_the_display_cleanly(terminal_environment, monkeypatch, interruption):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(interruption):
        with progress_counter("reading /data/pets images") as progress:
            progress(50, 400)
            assert sys.stderr is not terminal and refresh_threads(), "the display is running"
            raise interruption()
    assert sys.stderr is terminal, "stderr is no longer redirected through rich"
    assert not refresh_threads(settle=2.0), "the refresh thread has stopped"
    text = terminal.getvalue()
    assert text.endswith("\n\x1b[?25h"), f"the line ends and the cursor is shown again: {text[-40:]!r}"
    assert "50/400" in text.rsplit("\r", 1)[-1], "the line is left as it stood"
    progress(100, 400)  # a straggling report after the block
    assert terminal.getvalue() == text


@pytest.mark.parametrize("columns", [60, 80])
def test_a_long_description_is_cut_so_the_counts_stay_on_one_line(terminal_environment, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    terminal = FakeTerminal()
    description = "reading /home/someone/a/rather/long/path/to/the/data/folder/pets images"
    with progress_counter(description, file=terminal) as progress:
        progress(1200, 1500)
    text = terminal.getvalue()
    assert text.count("\n") == 1, "one line, ended once"
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.rsplit("\r", 1)[-1]).rstrip("\n")
    assert len(final) <= columns and " 1200/1500 " in final and final.endswith(" left"), repr(final)
    assert final.startswith("  read") and "…" in final and "images " in final, "the middle of the description gives way"
