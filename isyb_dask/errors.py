"""Exception types with messages meant for users, not tracebacks."""

from __future__ import annotations


class IsybError(Exception):
    """Base class of every error raised on purpose by isyb-dask."""


class InputError(IsybError):
    """An input file or its metadata is unusable (corrupt, truncated, wrong shape, ...).

    The message names the file and the problem; the pipeline records it as the
    subject's error and carries on with the other subjects.
    """


class BIDSError(IsybError):
    """The input directory is not a usable BIDS dataset or a query on it is invalid."""


class ConfigError(IsybError):
    """A configuration value or a command-line option is invalid."""


class RegistrationError(IsybError):
    """A registration failed or produced an implausible transform."""
