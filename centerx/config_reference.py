"""Moved out of the package in 0.2.0: the generator of docs/config.md reads the
repository's configs/ and docs/, so it is ``docs/config_reference.py``."""

raise ImportError(
    "centerx.config_reference moved to docs/config_reference.py (0.2.0): run "
    "`.venv/bin/python docs/config_reference.py` (add --check to only compare)."
)
