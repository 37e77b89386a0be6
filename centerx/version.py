"""centerX's version, in one place: the package (``centerx.__version__``), setup.py
and every export's properties read it from here."""

__version__ = "0.2.1"
