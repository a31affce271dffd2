"""The input files of `carbontrack gates check`: each opened, checked by its fstat, then read at most
MAX_INPUT_BYTES + 1 bytes (the one byte more shows a file is over), so no input is read whole only to be
refused, and a directory or a FIFO is named as what it is."""

from __future__ import annotations

import os
import stat


class UsageError(ValueError):
    """Input that cannot be judged: exit 2, never a traceback."""


MAX_INPUT_BYTES = 20 * 1024 * 1024
"""The largest input file read (20 MiB): parsing holds several times a file's size in memory, and a
report over the cap (coverage.py JSON of a very large codebase) can be given as `{"coverage": FRACTION}`."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
"""O_NONBLOCK: opening a FIFO returns at once (fstat then refuses it); O_BINARY: no newline translation
on Windows."""


def read_input(flag: str, path: str | None) -> str | None:
    """The text of the file given with `flag`; None without one. A missing path, a directory, anything
    but a regular file, a file over MAX_INPUT_BYTES and text that is not UTF-8 are UsageErrors."""
    if path is None:
        return None
    if not path.strip():
        raise UsageError(f"{flag}: expected a file path, got an empty string (an unset CI variable?)")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (given with {flag})") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UsageError(f"{path}: cannot read ({flag}): {getattr(exc, 'strerror', None) or exc}") from None
    try:
        _check_file(flag, path, os.fstat(fd))
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_INPUT_BYTES + 1)  # more than stat said: a file that grew, or /proc's size 0
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({flag}): {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(_too_large(flag, path, f"more than {MAX_INPUT_BYTES:,} bytes"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{path}: expected UTF-8 text ({flag}), got {exc.reason} at byte {exc.start}"
        ) from None


def _check_file(flag: str, path: str, found: os.stat_result) -> None:
    """A regular file of at most MAX_INPUT_BYTES (a link to one counts), from its stat alone."""
    if stat.S_ISDIR(found.st_mode):
        raise UsageError(f"{path}: is a directory, expected a file (given with {flag})")
    if not stat.S_ISREG(found.st_mode):
        raise UsageError(f"{path}: not a regular file (given with {flag})")
    if found.st_size > MAX_INPUT_BYTES:
        raise UsageError(_too_large(flag, path, f"{found.st_size:,} bytes"))


def _too_large(flag: str, path: str, size: str) -> str:
    cap = f"{MAX_INPUT_BYTES / 2**20:g} MiB ({MAX_INPUT_BYTES:,} bytes; given with {flag})"
    return f"{path}: expected a file of at most {cap}, got {size}"
