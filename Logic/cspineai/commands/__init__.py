"""Subcommands of the ``cspineai`` command line (see :mod:`cspineai.cli`)."""
