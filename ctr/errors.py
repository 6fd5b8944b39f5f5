"""User-facing errors: the CLIs print these as one line and exit non-zero."""

from __future__ import annotations


class CTRError(ValueError):
    """An error caused by user input (config, data, run directory), not by a bug."""


class ConfigError(CTRError):
    """An unknown config key, a wrong type, or an invalid combination."""


class DataError(CTRError):
    """Malformed or incompatible input data; the message names file, line and column."""


SHOWN_CHARS = 60  # characters of a value shown in a message: enough to recognise it, never a whole line of a file


def quoted(value: str | bytes, limit: int = SHOWN_CHARS) -> str:
    """``value`` as a message shows it: quoted like ``repr``, so control characters (terminal escape sequences
    included) and bytes that are not UTF-8 print as escapes, never raw; cut to ``limit`` characters (``...``)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def printable(text: str, limit: int = 2 * SHOWN_CHARS) -> str:
    """Free text from elsewhere (a library's message, a header name) with what :func:`quoted` escapes escaped,
    without the quotes; cut to ``limit`` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")
