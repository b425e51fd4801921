"""User-facing errors.

Anything the user can fix (a typo in a study, a missing dataset, conflicting tricks) raises
``AblateError``; the CLI prints its message and exits with code 2 before any training starts.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class AblateError(Exception):
    """An error caused by user input; the CLI exits with code 2."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
