"""Errors a user can cause, reported as one clear line by the command-line tools."""

import functools
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A problem with the user's input (path, file, config value): printed as one line."""


class DataError(UserError):
    """A data file or folder is not what the fastMRI layout expects."""


def report_user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so a UserError prints `error: <message>` and exits with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
