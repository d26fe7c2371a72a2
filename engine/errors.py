"""Errors that are the user's to fix: the CLI reports these (and only these) as one line.

Anything else raised inside xptrain is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, options, data, checkpoints or environment; the message says what was
    expected and names the file, option or value."""


class ConfigError(UserError, ValueError):
    """An option or hyperparameter out of range or inconsistent with another."""
