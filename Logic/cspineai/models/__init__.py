"""Trained models: the registry of shipped and user-registered models (:mod:`.registry`, ``Models.json``) and, beside
it, the shipped weight files and model cards. Loading always checks the file's SHA-256 against its registry entry."""
