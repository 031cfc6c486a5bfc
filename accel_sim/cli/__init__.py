"""The ``accel-sim`` command: a thin layer over the Python API.

Every error a user can cause ends as one line on stderr and exit code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from accel_sim import __version__
from accel_sim.cli import (
    analyze_command,
    campaign_commands,
    eval_command,
    fault_commands,
    harden_command,
    image_commands,
    train_command,
)
from accel_sim.errors import AccelSimError
from accel_sim.runtime import tune_allocator

logger = logging.getLogger("accel_sim")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the message) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="accel-sim",
        description="Fault injection on an emulated fixed-point systolic-array DNN accelerator.",
    )
    parser.add_argument("--version", action="version", version=f"accel-sim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--verbose", action="store_true", help="log progress (always on for train)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    train_command.register(sub)
    eval_command.register(sub)
    image_commands.register(sub)
    fault_commands.register(sub)
    harden_command.register(sub)
    campaign_commands.register(sub)
    analyze_command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 user error)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    verbose = args.verbose or args.command == "train"
    level = logging.DEBUG if args.debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    tune_allocator()
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader that stopped early shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        # an OSError too, so it comes first; stdout is replaced so that the interpreter's final
        # flush of the closed pipe cannot fail again at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (AccelSimError, OSError) as exc:
        if debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(f"accel-sim {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"accel-sim {args.command}: interrupted", file=sys.stderr)
        return 130
