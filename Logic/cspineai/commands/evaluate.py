"""``cspineai evaluate``: the same as ``Training/evaluate.py`` (arguments, behaviour: :mod:`cspineai.training.main`)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..training import main

    doc = main.evaluate_main.__doc__
    parser = subparsers.add_parser("evaluate", help=doc, description=doc)
    main.add_evaluate_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.main import run_evaluate

    return run_evaluate(args)
