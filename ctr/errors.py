"""User-facing errors: the CLIs print these as one line and exit non-zero."""

from __future__ import annotations


class CTRError(ValueError):
    """An error caused by user input (config, data, run directory), not by a bug."""


class ConfigError(CTRError):
    """An unknown config key, a wrong type, or an invalid combination."""


class DataError(CTRError):
    """Malformed or incompatible input data; the message names file, line and column."""
