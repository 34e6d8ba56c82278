"""Errors meant for people: each says what was received, what was expected and how to fix it.

They subclass ``ValueError`` so Python callers can catch them as usual; the CLI prints
their message without a traceback and exits with code 2.
"""


class ReslabError(ValueError):
    """Base class of every user-facing reslab error."""


class ConfigError(ReslabError):
    """A bad configuration value (names the key and the allowed values)."""


class DataError(ReslabError):
    """A dataset that cannot be used as given."""


class WeightsError(ReslabError):
    """Weights that cannot be found, trusted or matched to the model."""
