"""Stage 1, parse: Cedar text to per-policy JSON (EST), with locations.

cedarpy does the parsing (`policies_to_json_str`). This stage adds what the
rest of the compiler and its error messages need: a stable id per policy
(its `@id` annotation, else `<file>:<line>` of its first line, the one id
rule of both enforcement points; Cedar's positional `policyN` in the
concatenation of all files is kept beside it as `cedar_id`), the file and
line:col it came from, and a located error when the text does not
parse. Called by `compiler.pipeline`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy

from compiler.errors import Diagnostic, Location, ParseError, UnsupportedError
from compiler.source import SourceText


@dataclass(frozen=True)
class PolicySource:
    """One input: a file name (for messages) and its Cedar text."""

    name: str
    text: str


@dataclass(frozen=True)
class ParsedPolicy:
    pid: str  # the @id annotation, else `<file>:<line>`
    cedar_id: str  # Cedar's positional id in the concatenated sources
    local_index: int  # Cedar's positional index within its own source
    has_annotation_id: bool
    est: dict[str, Any]
    location: Location
    source: SourceText
    statement: int  # index of the statement in its source


@dataclass(frozen=True)
class ParsedSources:
    policies: tuple[ParsedPolicy, ...]
    text: str  # all sources joined, as cedarpy evaluates them
    sources: tuple[SourceText, ...]


def parse_sources(sources: Sequence[PolicySource]) -> ParsedSources:
    """Parse every source; raise `ParseError` (all files' errors) if any fails."""
    policies: list[ParsedPolicy] = []
    texts: list[SourceText] = []
    errors: list[Diagnostic] = []
    counter = 0
    names: set[str] = set()
    for src in sources:
        if src.name in names:
            # ids and locations are `<file>:<line>`: two sources of one name
            # would make them ambiguous, and one could shadow the other
            raise ParseError(Diagnostic(f"two policy sources are named `{src.name}`; "
                                        "give each file its own name", Location(src.name)))
        names.add(src.name)
        st = SourceText(src.name, src.text)
        texts.append(st)
        try:
            est = json.loads(cedarpy.policies_to_json_str(src.text))
        except ValueError as e:
            errors.append(_locate_parse_error(st, str(e)))
            continue
        if est.get("templates") or est.get("templateLinks"):
            tid = next(iter(est.get("templates") or {"": None}))
            idx = int(tid[6:]) if re.fullmatch(r"policy\d+", tid) else -1
            raise UnsupportedError(
                Diagnostic(
                    "templates (`?principal`, `?resource`) are not supported: "
                    "write static policies",
                    st.statement_location(idx),
                )
            ) from None
        static = est.get("staticPolicies", {})
        aligned = len(static) == len(st.statements)
        for local_id, body in sorted(static.items(), key=lambda kv: int(kv[0][6:])):
            index = int(local_id[6:])
            annotations = body.get("annotations") or {}
            cedar_id = f"policy{counter + index}"
            pid = annotations.get("id")
            loc = st.statement_location(index) if aligned else st.location(0)
            policies.append(
                ParsedPolicy(
                    pid=pid if pid is not None else _position_id(src.name, loc, aligned, index),
                    cedar_id=cedar_id,
                    local_index=index,
                    has_annotation_id=pid is not None,
                    est=body,
                    location=loc,
                    source=st,
                    statement=index if aligned else -1,
                )
            )
        counter += len(static)
    if errors:
        raise ParseError(errors)
    policies = _two_on_a_line(policies)
    seen: dict[str, ParsedPolicy] = {}
    dups: list[Diagnostic] = []
    for p in policies:
        if p.pid in seen:
            dups.append(
                Diagnostic(
                    f"duplicate policy id `{p.pid}`: first used at {seen[p.pid].location}",
                    p.location,
                )
            )
        seen[p.pid] = p
    if dups:
        raise ParseError(dups)
    return ParsedSources(tuple(policies), "\n".join(s.text for s in sources), tuple(texts))


def _two_on_a_line(policies: list[ParsedPolicy]) -> list[ParsedPolicy]:
    """Unannotated policies sharing a line are told apart by column too."""
    count: dict[str, int] = {}
    for p in policies:
        if not p.has_annotation_id:
            count[p.pid] = count.get(p.pid, 0) + 1
    return [
        dataclasses.replace(p, pid=str(p.location))
        if not p.has_annotation_id and count[p.pid] > 1 and p.location.line
        else p
        for p in policies
    ]


def _position_id(name: str, loc: Location, aligned: bool, index: int) -> str:
    """`<file>:<line>` of an unannotated policy (`:<col>` too when it shares the line)."""
    if not aligned:  # the statement splitter disagrees with Cedar: count instead
        return f"{name}:policy{index}"
    return f"{name}:{loc.line}"


def _locate_parse_error(st: SourceText, message: str) -> Diagnostic:
    """Find the statement a Cedar parse error belongs to by parsing each alone."""
    message = message.strip().splitlines()[0] if message.strip() else "parse error"
    if st.unterminated is not None:
        return Diagnostic(f"{message}: unterminated string literal", st.location(st.unterminated))
    for i, stmt in enumerate(st.statements):
        piece = st.text[stmt.start : stmt.end]
        try:
            cedarpy.policies_to_json_str(piece)
        except ValueError as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else message
            loc = st.location(stmt.start)
            word = re.search(r"`([^`]+)`|: (\w+)$", detail)
            if word:
                found = st.find_word(i, word.group(1) or word.group(2))
                loc = found or loc
            policy = stmt.annotation_id if stmt.annotation_id is not None else None
            return Diagnostic(detail, loc, policy)
    return Diagnostic(message, Location(st.name))
