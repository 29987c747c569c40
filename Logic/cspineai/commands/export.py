"""``cspineai export``: the same as ``Training/export.py`` (arguments and behaviour: :mod:`cspineai.training.main`)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..training import main

    doc = main.export_main.__doc__
    parser = subparsers.add_parser("export", help=doc, description=doc)
    main.add_export_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.main import run_export

    return run_export(args)
