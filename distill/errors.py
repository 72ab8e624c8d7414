"""Errors a user can act on. Each message is one line: what is wrong, where, what to do."""

from __future__ import annotations


class DistillError(Exception):
    """Base class: the CLI prints str(error) as one line and exits with `exit_code`."""

    exit_code = 1


class UsageError(DistillError):
    """A flag, argument or config value is wrong."""

    exit_code = 2


class InputError(DistillError):
    """An input file is missing or malformed (message names file:line)."""


class ConfigError(DistillError):
    """distill.toml or a style spec is malformed (message names file and key)."""


class RunError(DistillError):
    """The run folder is missing, incomplete, or a stage's inputs are absent."""


class BackendError(DistillError):
    """A model provider failed: missing key, unreachable server, unknown model."""


class BudgetExceeded(DistillError):
    """A hard spending cap was reached; work done so far is kept."""


class MissingExtra(DistillError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, what: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'distill[{extra}]'")
        self.extra = extra


def require(module: str, extra: str, what: str):  # noqa: ANN201 - returns a module
    """Import an optional heavy module lazily, or raise MissingExtra naming the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(extra, what) from e
