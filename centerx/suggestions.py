"""The nearest names to a word the user mistyped (a config key, a dataset name), for
the error that refuses it."""

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, names: Iterable[str], cutoff: float) -> str:
    """``"; did you mean A or B?"`` with the (up to three) ``names`` nearest to ``word``
    (difflib's similarity ratio at least ``cutoff``), or ``"."`` when none is that near:
    the end of a sentence that says what ``word`` is not."""
    near = difflib.get_close_matches(word, list(names), n=3, cutoff=cutoff)
    return f"; did you mean {' or '.join(near)}?" if near else "."
