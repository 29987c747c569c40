"""Synthetic cervical-spine cohort: CT + MRI of parametric patients with labels, true registration and outcome.

- :func:`generate_case` makes one case in memory (:class:`PhantomCase`); :func:`generate_cohort` writes a cohort and
  its ``manifest.csv``.
- Modules: ``anatomy`` (parametric patient and pathology), ``pose`` (per-session neck pose, exact MRI->CT map),
  ``acquire`` (CT and MRI physics), ``outcome`` (pain rule, Bayes accuracy), ``radiograph`` (lateral DRR),
  ``randomize`` (domain randomisation), ``protocol`` (grids and sequence settings), ``cohort`` (files, manifest).

Everything is documented with its sources in ``docs/phantom.md``.
"""

from .cohort import generate_cohort, write_case
from .generator import PhantomCase, generate_case, sample_parameters
from .protocol import Protocol, preset

__all__ = ["PhantomCase", "Protocol", "generate_case", "generate_cohort", "preset", "sample_parameters", "write_case"]
