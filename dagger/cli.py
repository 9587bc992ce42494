"""The ``dagger`` command line: inspect and maintain stored experiments.

    dagger verify DIR            check every record, payload and blob against its checksum
    dagger gc DIR [--dry-run]    remove blobs and files that nothing refers to

Also runs as ``python -m dagger``. A folder that is not an experiment gets a one-line error
and exit status 2; problems found by ``verify`` give exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import DaggerError
from .store.maintenance import DEFAULT_MIN_AGE, gc, verify

__all__ = ["main"]


def _verify(args: argparse.Namespace) -> int:
    report = verify(args.directory)
    print(report)
    return 0 if report.ok else 1


def _gc(args: argparse.Namespace) -> int:
    report = gc(args.directory, dry_run=args.dry_run, min_age=args.min_age)
    print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dagger", description="Inspect and maintain dagger experiment folders."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "verify", help="check every record, payload and blob against its checksum"
    )
    check.add_argument("directory", metavar="DIR")
    check.set_defaults(handler=_verify)

    clean = commands.add_parser("gc", help="remove blobs and files that nothing refers to")
    clean.add_argument("directory", metavar="DIR")
    clean.add_argument("--dry-run", action="store_true", help="only list what would go")
    clean.add_argument(
        "--min-age",
        type=float,
        default=DEFAULT_MIN_AGE,
        metavar="SECONDS",
        help=f"leave files younger than this alone (default {DEFAULT_MIN_AGE:.0f})",
    )
    clean.set_defaults(handler=_gc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dagger`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except DaggerError as error:
        print(f"dagger {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
