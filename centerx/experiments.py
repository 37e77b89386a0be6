"""Moved out of the package in 0.2.0: what the experiment scripts share reads the
repository's demo configs, so it is ``projects/experiments.py`` in the repository."""

raise ImportError(
    "centerx.experiments moved to projects/experiments.py in the repository (0.2.0): put projects/ on "
    "sys.path and `import experiments`, as the scripts of projects/ do."
)
