"""Classify an LLM-provider handshake by who made it.

* `registered`: the workload's identity matches an `Agent` (or
  `ServiceIdentity`) record of the registry;
* `shadow`: the workload is known (a pod, a unit, a container, a cgroup) but
  no record matches it;
* `unattributable`: the handshake cannot be tied to any workload (its
  cgroup was never seen and its process is unknown);
* `governed`: the destination is the AI gateway itself, so the call goes
  through the governed path whoever makes it; the caller's identity is
  still recorded.

Pure: the caller supplies the workload (or None), the registry and the
catalog match.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.discovery.catalog import Match
from agent.registry import Caller, Registry
from agent.workloads import Workload


class Classification(StrEnum):
    REGISTERED = "registered"
    SHADOW = "shadow"
    UNATTRIBUTABLE = "unattributable"
    GOVERNED = "governed"


@dataclass(frozen=True, slots=True)
class Verdict:
    classification: Classification
    caller: Caller | None
    reason: str


def classify(workload: Workload | None, match: Match, registry: Registry) -> Verdict:
    caller = registry.match_any(workload.identities()) if workload is not None else None
    if match.gateway:
        who = f"{caller.kind} `{caller.meta.key}`" if caller else "an unregistered caller"
        return Verdict(Classification.GOVERNED, caller,
                       f"destination `{match.pattern}` is the AI gateway; caller is {who}")
    if workload is None:
        return Verdict(Classification.UNATTRIBUTABLE, None,
                       "the socket's cgroup was never seen and its process is unknown")
    if caller is not None:
        return Verdict(Classification.REGISTERED, caller,
                       f"workload `{workload.name}` matches {caller.kind} `{caller.meta.key}`")
    ids = ", ".join(str(i) for i in workload.identities()) or "none"
    return Verdict(Classification.SHADOW, None,
                   f"no registry record matches workload `{workload.name}` (identities: {ids})")
