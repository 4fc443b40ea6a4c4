"""One way for every command line in the project to reject bad input.

Bad input must end a command with exit code 2 and one line saying what is
wrong, never a traceback, so every entry point raises UsageError and wraps its
main() in run_cli().
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2


class UsageError(Exception):
    """The user asked for something that cannot be done; the message says why."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Run main(argv); turn a UsageError into one line on stderr and exit code 2."""
    try:
        code = main(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)


def console_script(main: Callable[[list[str] | None], int]) -> Callable[[], NoReturn]:
    """A stage's console script ([project.scripts] in pyproject.toml): main() through run_cli()."""
    return lambda: run_cli(main)
