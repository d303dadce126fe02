"""The one policy loader: Cedar text to validated, classified policies.

Both enforcement points load policies here, so both see the same policies
under the same ids (`@id`, else `<file>:<line>`), checked against the same
schema: `compile_policies` lowers the kernel part of the result to maps,
and the decision point indexes the whole result for its requests. Stages:
parse (cedarpy, with locations), ir (`policy.build_policy`), schema
validation per action where one schema cannot type-check a policy for all
the actions its scope admits, the kernel's own limits, and the layer split
(`kernel`, `gateway`, `both`) with the reasons. Pure: text in, data out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.ir import Policy
from compiler.parse import ParsedPolicy, ParsedSources, PolicySource, parse_sources
from compiler.policy import build_policy
from compiler.result import PolicyReport
from compiler.schema import Schema, load_schema
from compiler.validate import check_kernel_limits, check_reserved, classify, validate_schema


@dataclass(frozen=True)
class LoadedPolicies:
    """Every policy of a set, in source order, three views of each."""

    parsed: ParsedSources
    policies: tuple[Policy, ...]  # the IR the compiler specialises
    reports: tuple[PolicyReport, ...]  # layer and reasons, for `manul compile`
    schema: Schema

    @property
    def sources(self) -> tuple[ParsedPolicy, ...]:
        return self.parsed.policies

    def __len__(self) -> int:
        return len(self.policies)


def load_policies(sources: Sequence[PolicySource], *, validate: bool = True) -> LoadedPolicies:
    """Parse, validate and classify; raise a `CompileError` subclass on any error.

    `validate=False` skips the schema and kernel-limit checks (tests that
    feed ill-typed policies to the decision point on purpose). A set is
    loaded once: the result (immutable) is kept for the last few sets, so
    the decision point and every sandbox compiled from the same set share
    one load.
    """
    return _load(tuple(sources), validate)


@functools.lru_cache(maxsize=8)
def _load(sources: tuple[PolicySource, ...], validate: bool) -> LoadedPolicies:
    schema = load_schema()
    parsed = parse_sources(sources)
    policies = [build_policy(p, schema) for p in parsed.policies]
    check_reserved(policies, parsed)
    skipped: dict[str, dict[str, str]] = {}
    if validate:
        skipped = validate_schema(parsed, policies, schema)
        check_kernel_limits(policies, parsed)
    reports = tuple(classify(p, schema, skipped.get(p.pid)) for p in policies)
    return LoadedPolicies(parsed, tuple(policies), reports, schema)
