"""The ``cspineai`` command line: one subcommand per module in :mod:`cspineai.commands`.

Each command module defines ``register(subparsers)`` that adds its parser and sets ``func`` (called with the parsed
arguments). Command modules import heavy packages inside ``func`` so that ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import CSpineCancelled, CSpineError

#: Subcommands, in the order ``--help`` lists them (module names in ``cspineai.commands``).
COMMANDS = ["demo", "run", "info", "convert", "train", "evaluate", "export", "measure", "phantom", "predict",
            "register"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cspineai", description="CT/MRI assessment of cervical spondylosis (CSpineAI).", allow_abbrev=False
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cspineai.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except CSpineCancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except CSpineError as error:
        # A project error is for the user: its message names the input and the problem, no traceback needed.
        print(f"error: {error}", file=sys.stderr)
        return 2
