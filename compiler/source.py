"""Where things are in Cedar text: a small lexer for error locations.

cedarpy parses policies but reports no positions, so this module finds them:
it splits a policy file into statements (one per policy, in the order Cedar
numbers them `policy0`, `policy1`, ...), and records each statement's start,
its `@id` annotation and its string literals. `parse` uses it to say which
policy a Cedar error belongs to, and `validate`/`lower` use it to point at
the literal a compile error is about. It never decides what a policy means;
cedarpy does that.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from compiler.errors import Location

WILDCARD = "\x00*wildcard*"  # a `like` pattern element that is an unescaped `*`

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'}


@dataclass(frozen=True)
class StringToken:
    """A string literal: offset of its opening quote and its raw body."""

    offset: int
    raw: str


@dataclass(frozen=True)
class Statement:
    """One top-level statement (a policy), `start` to `end` (past the `;`)."""

    start: int
    end: int
    annotation_id: str | None
    strings: tuple[StringToken, ...] = field(default=())


class SourceText:
    """A file's text with line/column lookup and its statements."""

    def __init__(self, name: str, text: str):
        self.name = name
        self.text = text
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        # `unterminated`: offset of a string literal that never closes, if any.
        self.statements, self.unterminated = _split(text)

    def location(self, offset: int) -> Location:
        """The 1-based line and column of `offset`."""
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return Location(self.name, line + 1, offset - self._line_starts[line] + 1)

    def statement_location(self, index: int) -> Location:
        if 0 <= index < len(self.statements):
            return self.location(self.statements[index].start)
        return Location(self.name)

    def find_string(self, index: int, value: str, *, pattern: bool = False) -> Location:
        """The location of the first literal in statement `index` equal to `value`.

        With `pattern`, literals are decoded as `like` patterns, so `value`
        must use `WILDCARD` for unescaped stars. Falls back to the start of
        the statement when no literal matches.
        """
        if not 0 <= index < len(self.statements):
            return Location(self.name)
        for tok in self.statements[index].strings:
            try:
                decoded = decode_string(tok.raw, pattern=pattern)
            except ValueError:
                continue
            if "".join(decoded) == value:
                return self.location(tok.offset)
        return self.statement_location(index)

    def find_word(self, index: int, word: str) -> Location | None:
        """The location of `word` (outside strings) in statement `index`."""
        if not 0 <= index < len(self.statements):
            return None
        st = self.statements[index]
        pos = st.start
        while True:
            pos = self.text.find(word, pos, st.end)
            if pos < 0:
                return None
            if not any(t.offset <= pos <= t.offset + len(t.raw) + 1 for t in st.strings):
                return self.location(pos)
            pos += len(word)


def decode_string(raw: str, *, pattern: bool = False) -> list[str]:
    """Decode a Cedar string literal body into characters.

    With `pattern`, an unescaped `*` becomes `WILDCARD` and `\\*` a literal
    star, as in Cedar's `like`. Raises `ValueError` on a bad escape.
    """
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "*" and pattern:
            out.append(WILDCARD)
            i += 1
            continue
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(raw):
            raise ValueError("dangling backslash")
        nxt = raw[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "*" and pattern:
            out.append("*")
            i += 2
        elif nxt == "x":
            out.append(chr(int(raw[i + 2 : i + 4], 16)))
            i += 4
        elif nxt == "u" and raw[i + 2 : i + 3] == "{":
            close = raw.index("}", i)
            out.append(chr(int(raw[i + 3 : close], 16)))
            i = close + 1
        else:
            raise ValueError(f"bad escape `\\{nxt}`")
    return out


# The tokens that matter for splitting: strings (possibly unterminated),
# comments, brackets and semicolons; everything else is skipped in runs.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*("?)|//[^\n]*|[;()\[\]{}]|[^\s;()\[\]{}"/]+|/')


def _split(text: str) -> tuple[list[Statement], int | None]:
    """Split `text` into statements at `;` outside brackets and strings."""
    statements: list[Statement] = []
    depth = 0
    start: int | None = None
    strings: list[StringToken] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok.startswith("//"):
            continue
        if start is None:
            start = m.start()
        if tok[0] == '"':
            if not m.group(1):
                return statements, m.start()  # no closing quote
            strings.append(StringToken(m.start(), tok[1:-1]))
        elif tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth = max(0, depth - 1)
        elif tok == ";" and depth == 0:
            statements.append(
                Statement(start, m.end(), _annotation_id(text, start, strings), tuple(strings))
            )
            start, strings = None, []
    if start is not None:
        end = len(text.rstrip())
        statements.append(
            Statement(start, end, _annotation_id(text, start, strings), tuple(strings))
        )
    return statements, None


def _annotation_id(text: str, start: int, strings: list[StringToken]) -> str | None:
    """The value of a leading `@id("...")` annotation, if the statement has one."""
    by_offset = {t.offset: t for t in strings}
    pos = start
    while text.startswith("@", pos):
        end = pos + 1
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        name = text[pos + 1 : end]
        pos = _skip_space(text, end)
        value = ""
        if text.startswith("(", pos):
            tok = by_offset.get(_skip_space(text, pos + 1))
            if tok is None:
                return None
            try:
                value = "".join(decode_string(tok.raw))
            except ValueError:
                return None
            pos = _skip_space(text, tok.offset + len(tok.raw) + 2)
            if not text.startswith(")", pos):
                return None
            pos = _skip_space(text, pos + 1)
        if name == "id":
            return value
    return None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos
