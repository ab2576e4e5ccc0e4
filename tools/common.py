"""What every command shares: one-line errors, exit statuses, the ``--db`` option."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from litefs.errors import LitefsError

#: Exit statuses of every litefs command.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL (SQLAlchemy form, e.g. postgresql+psycopg://host/xcat); "
        "default: $LITEFS_DB, else the SQLite file /var/lib/litefs/litefs.db",
    )


def run_main(prog: str, body: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a command body; turn LitefsError into one line on stderr and its exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return body(args)
    except LitefsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `litefile ... | head`: the reader went away; not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line plus a hint, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")
