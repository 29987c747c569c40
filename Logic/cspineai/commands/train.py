"""``cspineai train``: the same as ``Training/train.py`` (arguments and behaviour: :mod:`cspineai.training.main`)."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..training import main

    doc = main.train_main.__doc__
    parser = subparsers.add_parser("train", help=doc, description=doc)
    main.add_train_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.main import run_train

    return run_train(args)
