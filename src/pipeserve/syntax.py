"""The backend composition syntax, parsed into a small tree.

Grammar (whitespace is allowed between tokens)::

    stage    := [ "(" NAME ")" ] NAME [ params ] [ children ]
    params   := "(" NAME "=" VALUE { "," NAME "=" VALUE } ")"
    children := "[" stage { "," stage } "]"

Examples: ``Identity``, ``S[DecodeMat,(swap)ResizeMat(resize_h=224)]``, ``A[B[C]]``.

``(f)B`` puts filter ``f`` before stage ``B`` (meaningful inside ``Sequential``); ``B(k=v)``
gives ``B`` a parameter of its own; ``A[B, C]`` hands ``B`` and ``C`` to ``A`` as children.
Parsing is pure and separate from building (see :mod:`pipeserve.registry`). Errors are
:class:`~pipeserve.errors.ConfigError` with a caret under the offending character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["BackendTree", "parse_backend"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-/")
_VALUE_STOP = frozenset(",)")


@dataclass(frozen=True)
class BackendTree:
    """One stage of a composed backend.

    Attributes:
        name: the registered backend name.
        params: parameters given inline with ``name(k=v)``, in source order.
        children: nested stages given with ``name[...]``.
        filter: the filter named with ``(f)name``, or None.
        pos: the offset of ``name`` in the source string (for error messages).
    """

    name: str
    params: tuple[tuple[str, str], ...] = ()
    children: tuple[BackendTree, ...] = ()
    filter: str | None = None
    pos: int = 0
    source: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        text = f"({self.filter})" if self.filter else ""
        text += self.name
        if self.params:
            text += "(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"
        if self.children:
            text += "[" + ",".join(str(c) for c in self.children) + "]"
        return text

    def names(self) -> list[str]:
        """Every backend name in the tree, depth first."""
        out = [self.name]
        for child in self.children:
            out.extend(child.names())
        return out


def parse_backend(source: str, *, node: str | None = None, key: str = "backend") -> BackendTree:
    """Parse a composition expression into a :class:`BackendTree`.

    Args:
        source: the expression, e.g. ``"S[(swap)A,B(k=v)[C]]"``.
        node: the node it belongs to, for error messages.
        key: the configuration key it came from, for error messages.

    Raises:
        ConfigError: on any syntax error, pointing at the character.
    """
    parser = _Parser(source, node, key)
    tree = parser.stage()
    parser.skip_space()
    if parser.pos != len(source):
        parser.fail("unexpected text after the expression")
    return tree


class _Parser:
    def __init__(self, source: str, node: str | None, key: str) -> None:
        self.source = source
        self.pos = 0
        self.node = node
        self.key = key

    def fail(self, message: str) -> None:
        # The line holding the character, with the caret under it (a TOML multi-line string
        # spans several).
        start = self.source.rfind("\n", 0, self.pos) + 1
        end = self.source.find("\n", self.pos)
        line = self.source[start : None if end < 0 else end]
        caret = " " * (self.pos - start) + "^"
        raise ConfigError(
            f"{message} at character {self.pos}:\n    {line}\n    {caret}",
            node=self.node,
            key=self.key,
        )

    def skip_space(self) -> None:
        while self.pos < len(self.source) and self.source[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.source[self.pos] if self.pos < len(self.source) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "end of text"
            self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def name(self, what: str) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.source) and self.source[self.pos] in _NAME_CHARS:
            self.pos += 1
        if start == self.pos:
            found = repr(self.source[self.pos]) if self.pos < len(self.source) else "end of text"
            self.fail(f"expected a {what}, found {found}")
        return self.source[start : self.pos]

    def value(self) -> str:
        self.skip_space()
        start = self.pos
        depth = 0
        while self.pos < len(self.source):
            char = self.source[self.pos]
            if depth == 0 and char in _VALUE_STOP:
                break
            depth += char in "[("
            depth -= char in "])"
            self.pos += 1
        text = self.source[start : self.pos].strip()
        if not text:
            self.fail("expected a value")
        return text

    def stage(self) -> BackendTree:
        filter_name = None
        if self.peek() == "(":
            self.pos += 1
            filter_name = self.name("filter name")
            self.expect(")")
        self.skip_space()
        pos = self.pos
        name = self.name("backend name")
        params: list[tuple[str, str]] = []
        if self.peek() == "(":
            self.pos += 1
            while True:
                param = self.name("parameter name")
                self.expect("=")
                params.append((param, self.value()))
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.expect(")")
                break
        children: list[BackendTree] = []
        if self.peek() == "[":
            self.pos += 1
            while True:
                children.append(self.stage())
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.expect("]")
                break
        return BackendTree(name, tuple(params), tuple(children), filter_name, pos, self.source)
