"""The XPath of the sources file: what a selector may use, checked when the file loads.

Selectors are XPath 1.0, run by lxml (libxml2) on lxml's HTML tree of the
page: the tree the parser built, so no ``<tbody>`` that the markup did not
write (browsers' developer tools show one; an XPath copied from them that
says ``tbody`` matches nothing here). The EXSLT regular expression functions
``re:test``, ``re:match`` and ``re:replace`` are available (Python's ``re``
syntax); nothing else beyond the XPath 1.0 core library.

libxml2 compiles an expression without looking up its functions, namespace
prefixes or variables, and checks operand types only while evaluating. A
selector such as ``bogus(td)``, ``x:td``, ``td[$n]`` or ``td | 1`` therefore
used to load fine and fail every fetch. :func:`check_xpath` closes that gap
at load time, in three steps:

1. compile (syntax);
2. read the expression's tokens: every function must be a core or ``re:``
   function, every prefix ``re``, and there are no variables;
3. evaluate it on a small sample listing, from every element of it (rows) or
   from the document (``row``, ``next_page``), which catches type errors
   such as a union with a number, and tells the result type (XPath 1.0 types
   are static: an expression that gives a number gives one on every page).

What step 3 cannot see -- a type error inside a predicate that no sample
element satisfies -- still fails as a typed format error when a page is parsed
(:mod:`bmsuploader.fetch.parsing`), never as an untyped crash.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache
from typing import Any, Final, Literal

from lxml import etree

EXSLT_REGEXP: Final = "http://exslt.org/regular-expressions"
NAMESPACES: Final = {"re": EXSLT_REGEXP}

CORE_FUNCTIONS: Final = frozenset(
    {
        # node-set
        "last", "position", "count", "id", "local-name", "namespace-uri", "name",
        # string
        "string", "concat", "starts-with", "contains", "substring-before", "substring-after",
        "substring", "string-length", "normalize-space", "translate",
        # boolean
        "boolean", "not", "true", "false", "lang",
        # number
        "number", "sum", "floor", "ceiling", "round",
    }
)  # fmt: skip
REGEXP_FUNCTIONS: Final = frozenset({"re:test", "re:match", "re:replace"})
_NODE_TYPES: Final = frozenset({"comment", "text", "processing-instruction", "node"})

# XPath 1.0 lexical structure (section 3.7), enough to find function names,
# prefixes and variables outside string literals.
_NCNAME = r"[^\W\d][\w.\-\u00b7]*"
_TOKENS = re.compile(
    rf"""
    (?P<space>\s+)
    | (?P<literal>"[^"]*"|'[^']*')
    | (?P<number>\d+(?:\.\d*)?|\.\d+)
    | (?P<variable>\$(?:{_NCNAME}:)?{_NCNAME})
    | (?P<name>{_NCNAME}(?::(?:{_NCNAME}|\*))?)
    | (?P<symbol>::|//|\.\.|!=|<=|>=|[()\[\].@,|+\-=<>*/$])
    """,
    re.VERBOSE,
)

# The sample listing for step 3: the shapes selectors are written for (a
# classic CGI table with header, upload, pager and layout rows; div-based rows;
# line breaks inside cells), so predicates over them are evaluated too.
_SAMPLE = b"""<html><head><title>t</title></head><body>
<form action="upload.cgi"><input type="file" name="upfile"></form>
<table class="list" id="list" border="1">
<tr><td colspan="5"><font size="2">max 10MB</font></td></tr>
<tr><th>File</th><th>Comment</th><th>Size</th><th>Date</th><th>DL</th></tr>
<tr class="odd"><td class="file"><a href="./src/up00002.zip" title="up00002.zip">up00002.zip</a></td>
<td class="comment"><b>t</b> a<br>b</td><td class="size">1KB</td><td class="date">26/01/01 00:00</td>
<td>0</td></tr>
<tr class="even"><td><a href="upload.cgi?get=00001">up00001.rar</a></td><td></td><td>2MB</td>
<td><span>26/01/01</span></td><td>3</td></tr>
<tr><td><a href="upload.cgi?page=2">next</a></td><td><a href="upload.cgi?page=3">3</a></td></tr>
</table>
<ul><li class="up" id="id-3" data-size="3MB"><span>s</span><a href="dl/3">DL</a><p>c</p></li></ul>
<div class="up" id="id-4" data-size="4MB"><span> </span><span>t</span><a href="dl/4">DL</a></div>
<p class="pager"><a href="upload.cgi?page=2" rel="next">next</a></p><!-- c -->
</body></html>"""


class XPathKind(StrEnum):
    """The XPath 1.0 type of an expression's result."""

    NODES = "node-set"
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"


#: Where an expression is evaluated: ``row`` and ``next_page`` on the document,
#: the fields on each row.
Context = Literal["document", "row"]


@cache
def compile_xpath(expression: str) -> etree.XPath:
    """The compiled expression, once per process and expression.

    ``smart_strings=False``: results are plain ``str`` (no back-reference to the
    tree). The ``re:`` functions are registered only where they are used, since
    registering them costs time on every evaluation.
    """
    uses_regexp = any(name.startswith("re:") for name in _function_names(expression))
    return etree.XPath(
        expression,
        namespaces=NAMESPACES if uses_regexp else None,
        regexp=uses_regexp,
        smart_strings=False,
    )


@cache
def check_xpath(expression: str, context: Context) -> XPathKind:
    """Compile, read and try an expression; its result type, or ``ValueError`` saying why not."""
    try:
        compiled = compile_xpath(expression)
    except etree.XPathSyntaxError as exc:
        raise ValueError(f"invalid XPath {expression!r}: {exc}") from exc
    _check_names(expression)
    sample = etree.fromstring(_SAMPLE, etree.HTMLParser(encoding="utf-8"))
    targets = [sample] if context == "document" else [e for e in sample.iter() if isinstance(e.tag, str)]
    kind: XPathKind | None = None
    for target in targets:
        try:
            result = compiled(target)
        except (etree.XPathError, re.error) as exc:
            raise ValueError(f"XPath {expression!r} cannot be evaluated: {exc}") from exc
        kind = kind or kind_of(result)
    assert kind is not None
    return kind


def kind_of(result: Any) -> XPathKind:
    """The XPath type of a result lxml returned."""
    if isinstance(result, list):
        return XPathKind.NODES
    if isinstance(result, bool):
        return XPathKind.BOOLEAN
    if isinstance(result, float):
        return XPathKind.NUMBER
    return XPathKind.STRING


def _check_names(expression: str) -> None:
    for token, kind, following in _tokens(expression):
        if kind == "variable":
            raise ValueError(f"XPath {expression!r}: variables ({token}) are not supported")
        if kind != "name" or following == "::":
            continue
        prefix = token.partition(":")[0] if ":" in token else None
        if prefix is not None and prefix not in NAMESPACES:
            raise ValueError(
                f"XPath {expression!r}: undefined namespace prefix {prefix!r} "
                "(HTML elements have no namespace; the only prefix is re: for EXSLT regular expressions)"
            )
        if following == "(" and token not in _NODE_TYPES and token not in CORE_FUNCTIONS | REGEXP_FUNCTIONS:
            raise ValueError(
                f"XPath {expression!r}: unknown function {token}() "
                "(XPath 1.0 core functions and re:test/re:match/re:replace only)"
            )


def _function_names(expression: str) -> list[str]:
    return [token for token, kind, following in _tokens(expression) if kind == "name" and following == "("]


_OPERATORS: Final = frozenset({"/", "//", "|", "+", "-", "=", "!=", "<", "<=", ">", ">="})
_OPERATOR_NAMES: Final = frozenset({"and", "or", "mod", "div"})
_BEFORE_OPERAND: Final = frozenset({"@", "::", "(", "[", ","})


def _tokens(expression: str) -> list[tuple[str, str, str | None]]:
    """``(token, kind, next token)`` for every token but white space.

    ``and``/``or``/``mod``/``div`` and ``*`` used as operators get the kind
    ``operator`` (XPath 1.0's rule: they are operators unless they start an
    operand, i.e. unless nothing, ``@ :: ( [ ,`` or an operator precedes them).
    """
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(expression):
        match = _TOKENS.match(expression, position)
        if match is None:  # compile() has accepted it, so this is a character we need not read
            position += 1
            continue
        position = match.end()
        kind = match.lastgroup or ""
        if kind == "space":
            continue
        token = match.group()
        if token in _OPERATORS and kind == "symbol":
            kind = "operator"
        elif token in _OPERATOR_NAMES | {"*"} and tokens:
            previous, previous_kind = tokens[-1]
            if previous not in _BEFORE_OPERAND and previous_kind != "operator":
                kind = "operator"
        tokens.append((token, kind))
    return [
        (token, kind, tokens[i + 1][0] if i + 1 < len(tokens) else None)
        for i, (token, kind) in enumerate(tokens)
    ]
