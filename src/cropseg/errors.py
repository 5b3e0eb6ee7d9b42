"""User errors and how entry points report them.

A user error (missing file, corrupt patch, bad config value) must end with one line
naming the file or key and what is wrong, a non-zero exit and no traceback.
Programming errors are not caught here and keep their tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: the message names the file or key and the problem."""


def report_user_errors(func: F) -> F:
    """Turn a ``UserError`` escaping ``func`` into one line on stderr and exit status 2, and Ctrl-C
    into one line and status 130.

    A reader that stops early (``cropseg info x.ckpt | head``) closes the pipe: that ends the
    command quietly, as for any Unix tool, instead of with a traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            # Ctrl-C is the user's choice, not a bug: no traceback. Outputs are atomic and reruns resume.
            print("interrupted: finished work is kept; rerun the same command to go on", file=sys.stderr, flush=True)
            sys.exit(130)  # 128 + SIGINT, as the shell reports it
        except BrokenPipeError:
            # Python would flush stdout again at exit and fail once more: point it at /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what the shell reports for a tool killed by the closed pipe

    return wrapper  # type: ignore[return-value]


def choose(kind: str, name: str, valid: dict | list | tuple, key: str | None = None):
    """Look ``name`` up among ``valid`` options (case-insensitive) or raise a UserError listing them."""
    options = list(valid)
    lookup = {str(o).lower(): o for o in options}
    found = lookup.get(str(name).lower())
    if found is None:
        where = f"{key}=" if key else f"{kind} "
        raise UserError(f"{where}{name!r} is not a known {kind}; choose one of: {', '.join(map(str, options))}")
    return valid[found] if isinstance(valid, dict) else found
