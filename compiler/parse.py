"""Stage 1, parse: Cedar text to per-policy JSON (EST), with locations.

cedarpy does the parsing (`policies_to_json_str`). This stage adds what the
rest of the compiler and its error messages need: a stable id per policy
(its `@id` annotation, else Cedar's positional `policyN` counted across all
input files in order, exactly as Cedar numbers their concatenation), the
file and line:col it came from, and a located error when the text does not
parse. Called by `compiler.pipeline`.
"""

from __future__ import annotations

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
    pid: str  # the @id annotation, else Cedar's positional id
    cedar_id: str  # Cedar's positional id in the concatenated sources
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
    for src in sources:
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
                    "templates are not supported: sandbox policies name their principal",
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
                    pid=pid if pid is not None else cedar_id,
                    cedar_id=cedar_id,
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
