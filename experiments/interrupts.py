"""Ctrl-C and SIGTERM: a clean stop at any moment, never swallowed.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be.
When that is inside a finaliser or a callback that TensorFlow or a thread pool calls, Python
prints "Exception ignored in ..." and carries on, and a run that the user stopped trains to the
end and exits 0. So the handler installed here also *records* the signal; the study checks
:func:`raise_if_interrupted` between steps (after reading the data, at every epoch's end,
between cells), and the command line turns a recorded signal into exit status 128 + signal
number (130 for Ctrl-C, 143 for SIGTERM) even if the exception itself was lost.
"""

from __future__ import annotations

import signal

_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGINT or SIGTERM); `signal_number` says which."""

    def __init__(self, signal_number: int = signal.SIGINT):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def _handle(signal_number, frame):
    global _received
    _received = signal_number
    raise Interrupted(signal_number)


def install_handlers() -> None:
    """Stop cleanly on SIGINT and SIGTERM (also where the parent started us with SIGINT ignored)."""
    global _received
    _received = None
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if a stop was requested, even if its first exception was swallowed."""
    if _received is not None:
        raise Interrupted(_received)


def exit_status(error: BaseException | None = None) -> int:
    """128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM."""
    number = getattr(error, "signal_number", None) or _received or signal.SIGINT
    return 128 + int(number)
