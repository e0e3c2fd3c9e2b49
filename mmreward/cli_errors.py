"""How the ``mmreward`` command reports an error: bad input as a message, a bug as a traceback.

Bad input (a record, a file, a flag, a missing extra) prints one line, ``mmreward: error: FILE:LINE
(id X) field F: reason``, and a hint line, and exits 2; ``--debug`` or ``MMREWARD_DEBUG=1`` adds the
traceback. Running out of memory (torch's ``OutOfMemoryError``, ``MemoryError``) is a message with
a hint to lower the batch size, exit 2. Anything else is a bug: the traceback, a request to report it, exit status 1.
"""

from __future__ import annotations

import sys
import traceback

DEBUG_ENV = ("MMREWARD_DEBUG", "MMREWARD_TRACEBACK")
DEBUG_HELP = "on an error, show the full Python traceback (or set MMREWARD_DEBUG=1)"
EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130

BAD_INPUT_ERRORS = (ValueError, OSError, ImportError, FloatingPointError)
"""Errors that mean the input is wrong (a record, a file, a flag, a missing extra): reported as a
message. ``RecordError`` and ``UntrustedConfigError`` are ``ValueError``s, ``NonFiniteError`` a
``FloatingPointError``; a ``TypeError`` counts when one of our packages raised it (a bad type in
a record), not when it came out of a library (more likely a bug)."""
OUR_PACKAGES = ("mmreward", "modalities", "judges", "integrations")


def is_bad_input(err: BaseException) -> bool:
    """Whether ``err`` is the user's input being wrong (a message) rather than a bug (a traceback)."""
    if isinstance(err, BAD_INPUT_ERRORS):
        return True
    if not isinstance(err, TypeError):
        return False
    tb, module = err.__traceback__, ""
    while tb is not None:  # the innermost frame: where it was raised
        module, tb = tb.tb_frame.f_globals.get("__name__", ""), tb.tb_next
    return module.split(".")[0] in OUR_PACKAGES


def _out_of_memory(err: BaseException) -> bool:
    """A device or host allocation failed: a resource limit, not a bug (torch's OOM is a RuntimeError)."""
    torch = sys.modules.get("torch")
    return isinstance(err, MemoryError) or (
        torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ()))
    )


def report_error(err: BaseException, debug: bool) -> int:
    """Print ``err`` for the user and return the exit status (see the module docstring)."""
    if isinstance(err, KeyboardInterrupt):
        print(
            "mmreward: interrupted (scores written so far are kept; `score --resume` goes on)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if _out_of_memory(err):
        print(
            f"mmreward: error: out of memory: {str(err).splitlines()[0] if str(err) else ''}\n"
            "Lower --batch-size (or --max-pixels, or the frames a video model samples) and run again; "
            "`score --resume` keeps what was written.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if is_bad_input(err):
        if debug:
            traceback.print_exception(err)
        message = " ".join(str(err).split("\n")) or type(err).__name__
        print(f"mmreward: error: {message}", file=sys.stderr)
        if not debug:
            print("(run with --debug, or MMREWARD_DEBUG=1, for the traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT
    traceback.print_exception(err)
    print(
        f"mmreward: internal error: {type(err).__name__}: {err}\nThis is a bug, not bad input: please "
        "report it with the traceback above, the command line and `mmreward --version`.",
        file=sys.stderr,
    )
    return EXIT_INTERNAL
