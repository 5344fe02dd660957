"""User-facing errors. An EdgekitError is a mistake in the input, not a bug: its message says the fix,
and the CLI prints it without a traceback and exits non-zero."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgekitError(Exception):
    """A user error whose message names the fix."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, word: str, choices: Iterable[str]) -> EdgekitError:
    choices = sorted(choices)
    return EdgekitError(f"unknown {kind} '{word}'{did_you_mean(word, choices)}; choose from: {', '.join(choices)}")
