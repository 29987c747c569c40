"""Training tasks, one module each, imported by name from a config's ``task:`` key (``task: pain`` imports
:mod:`cspineai.tasks.pain`). Each module subclasses :class:`cspineai.training.tasks.Task` and calls ``register_task``;
the protocol's docstring is the guide for writing one. :mod:`.toy` is the engine's own small task.
"""
