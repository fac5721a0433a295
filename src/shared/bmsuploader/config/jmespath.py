"""JMESPath for ``json`` sources: compiled once, checked when the config loads.

jmespath ships no type hints; this module is the one typed door to it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol, cast

import jmespath  # type: ignore[import-untyped]
from jmespath.exceptions import JMESPathError  # type: ignore[import-untyped]


class Expression(Protocol):
    def search(self, value: Any) -> Any: ...


class JMESPathFailure(Exception):
    """An expression that cannot be compiled or evaluated (e.g. a function given the wrong type)."""


@lru_cache(maxsize=256)
def compile_jmespath(expression: str) -> Expression:
    try:
        return cast(Expression, jmespath.compile(expression))
    except JMESPathError as exc:
        raise JMESPathFailure(f"invalid JMESPath {expression!r}: {_one_line(exc)}") from exc


def search(expression: str, value: Any) -> Any:
    try:
        return compile_jmespath(expression).search(value)
    except JMESPathError as exc:
        raise JMESPathFailure(f"JMESPath {expression!r} cannot be evaluated: {_one_line(exc)}") from exc


def check_jmespath(expression: str) -> str:
    """``expression`` if it compiles, else a ValueError for the config's error message."""
    try:
        compile_jmespath(expression)
    except JMESPathFailure as exc:
        raise ValueError(str(exc)) from exc
    return expression


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
