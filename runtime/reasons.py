"""One line of an exception for the user: what failure summaries and error messages print."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def typed_first_line(exc: BaseException) -> str:
    """``"ClassName: first line"`` (the class name alone when there is no message): for
    failures whose message may not say what kind of error it was (``KeyError: 'x'``)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
