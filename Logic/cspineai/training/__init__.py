"""The headless training engine shared by every model (see ``docs/training.md``).

- :mod:`.config`: YAML configuration, validation naming the bad key, ``--set a.b=value`` overrides;
- :mod:`.tasks`: the task protocol and registry (the guide for task authors);
- :mod:`.data`: manifest -> patient-level folds -> MONAI datasets and loaders, deterministic seeding;
- :mod:`.loop`: the training loop; :mod:`.checkpoint`: atomic checkpoints, safe loading, RNG states;
- :mod:`.init_from`: starting weights for fine-tuning (a registered model or a checkpoint);
- :mod:`.distributed`: torchrun / DistributedDataParallel; :mod:`.logging`: progress, metrics.csv, metrics.json;
- :mod:`.main`: the ``train`` / ``evaluate`` / ``export`` entry points of ``Training/*.py`` and the CLI.

Nothing heavy is imported here: ``import cspineai.training`` stays cheap.
"""
