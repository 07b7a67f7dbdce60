"""The project's error type: what an expected failure raises.

An expected failure is bad input, not a bug: a wrong path, a store the loader cannot use, an
incomplete forecast, a checkpoint that does not fit, a config value or argument out of range.
Each raises a `WeatherensError` whose message names the file, the variable or argument, and the
problem, in one line; `weatherens` prints that line and exits with status 2 (`--debug` shows the
traceback). Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class WeatherensError(Exception):
    """An expected failure; the message is one line naming the file, variable or argument and the problem."""


class InputError(WeatherensError, ValueError):
    """An argument or a value that the function cannot use (a count below 1, a lead that is not a
    multiple of the step, a date outside the store, a store or checkpoint that does not fit)."""
