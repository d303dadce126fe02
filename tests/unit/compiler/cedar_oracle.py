"""The differential tests' two sides: cedarpy on the source, and the bytes.

`Oracle.cedar` builds, for a kernel request, the Cedar request the kernel
stands for, independently of the compiler (docs/policy.md, "the request
model"): the resource entity is `FilePath::"<path>"` / `Executable::"<path>"`
with its parents from the entities file, or `NetworkDestination::"<ip>:<port>/<proto>"`
with `host` set when the address is one a host resolved to, and the parents
listed for the address form and the host form of its name. cedarpy then
decides on the *source* policies. `Oracle.kernel` decides the same request
from the compiled map entries with the reference evaluator.

`requests` is a hypothesis strategy that draws requests near the policies'
own literals (paths and their prefixes, CIDR edges, port bounds), where
compilers go wrong.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

import cedarpy
from hypothesis import strategies as st

from compiler import Compilation, EntitiesSource, PolicySource, compile_policies, load_schema
from compiler.evaluate import SandboxEvaluator

PATH_ACTIONS = ("readFile", "writeFile", "exec", "loadLibrary")
KERNEL_ACTIONS = (*PATH_ACTIONS, "connectNetwork")
SCHEMA = load_schema().cedar
MAPPED = ipaddress.ip_network("::ffff:0:0/96")
WELL_KNOWN = [
    "127.0.0.1",
    "127.255.0.9",
    "::1",
    "224.0.0.251",
    "239.1.2.3",
    "ff02::fb",
    "169.254.169.254",
]


@dataclass(frozen=True)
class Case:
    name: str
    policies: str
    entities: list[dict[str, Any]] = field(default_factory=list)
    resolved: dict[str, list[str]] = field(default_factory=dict)
    exact: bool = True  # False: some policy is approximated; check soundness only

    def compile(self) -> Compilation:
        ents = (
            EntitiesSource(f"{self.name}.json", json.dumps(self.entities))
            if self.entities
            else None
        )
        return compile_policies(
            [PolicySource(f"{self.name}.cedar", self.policies)], ents, resolved=self.resolved
        )


@dataclass(frozen=True)
class Request:
    sandbox: str
    action: str
    path: str = ""
    ip: str = ""
    port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True)
class Outcome:
    allow: bool
    policies: frozenset[str]


def agent_attrs(
    name: str, team: str = "", risk: str = "medium", capabilities: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An Agent's attributes as the registry's builder gives them (the one schema)."""
    levels = ("low", "medium", "high", "critical")
    return {"name": name, "namespace": "", "owner": "", "team": team, "risk_level": risk,
            "risk_score": levels.index(risk) + 1, "capabilities": list(capabilities),
            "labels": [], "url": ""}


def _uid(type_name: str, ident: str) -> dict[str, str]:
    return {"type": type_name, "id": ident}


class Oracle:
    def __init__(self, case: Case, compilation: Compilation):
        self.case = case
        self.comp = compilation
        self.sandboxes = {s.name: s for s in compilation.sandboxes}
        self.evaluators = {s.name: SandboxEvaluator(s) for s in compilation.sandboxes}
        self.policy_set = cedarpy.PolicySet.from_str(case.policies)
        self.base: dict[tuple[str, str], dict[str, Any]] = {}
        # literals of a resource type: each request is asked with its own store
        self.isolate = bool(re.search(r"\b(NetworkDestination|FilePath|Executable)\s*::",
                                      case.policies))
        self.member_parents: dict[str, list[dict[str, str]]] = {}
        for e in case.entities:
            t, i = e["uid"]["type"], e["uid"]["id"]
            if t == "NetworkDestination":
                self.member_parents[i] = e.get("parents", [])
                continue
            attrs = {"path": i} if t in ("FilePath", "Executable") else e.get("attrs", {})
            self.base[(t, i)] = {"uid": _uid(t, i), "attrs": attrs, "parents": e.get("parents", [])}
        # The attribute profiles an anonymous (class, default) principal is
        # asked under: every agent's of the case, else a neutral one. The
        # kernel's decision must be Cedar's for each (approximated sandboxes:
        # never allow what Cedar denies for any of them).
        profiles = [e["attrs"] for e in case.entities if e["uid"]["type"] == "Agent"]
        unique = [dict(p) for p in {json.dumps(p, sort_keys=True): p for p in profiles}.values()]
        self.profiles: list[dict[str, Any]] = unique or [agent_attrs("")]
        self.host_of: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, list[str]] = {}
        for host, addrs in case.resolved.items():
            for a in addrs:
                self.host_of.setdefault(ipaddress.ip_address(a), []).append(host)

    def ambiguous(self, r: Request) -> bool:
        return (
            r.action == "connectNetwork"
            and len(self.host_of.get(ipaddress.ip_address(r.ip), [])) > 1
        )

    def kernel(self, r: Request) -> Outcome:
        ev = self.evaluators[r.sandbox]
        if r.action == "connectNetwork":
            v = ev.connect(r.ip, r.port, r.protocol)
        else:
            v = ev.path(r.action, r.path)
        prov = self.comp.rules.get(v.rule_id)
        return Outcome(v.allow, frozenset(prov.policies) if prov else frozenset())

    def _resource(self, r: Request, host: str | None) -> dict[str, Any]:
        if r.action != "connectNetwork":
            t = "FilePath" if r.action in ("readFile", "writeFile") else "Executable"
            known = self.base.get((t, r.path))
            parents = known["parents"] if known else []
            return {"uid": _uid(t, r.path), "attrs": {"path": r.path}, "parents": parents}
        addr = ipaddress.ip_address(r.ip)
        shown = f"[{addr}]" if addr.version == 6 else str(addr)
        ident = f"{shown}:{r.port}/{r.protocol}"
        parents = list(self.member_parents.get(ident, []))
        attrs: dict[str, Any] = {
            "ip": {"__extn": {"fn": "ip", "arg": str(addr)}},
            "port": r.port,
            "protocol": r.protocol,
        }
        if host is not None:
            attrs["host"] = host
            parents += self.member_parents.get(f"{host}:{r.port}/{r.protocol}", [])
        return {"uid": _uid("NetworkDestination", ident), "attrs": attrs, "parents": parents}

    def cedar(self, reqs: list[Request]) -> list[list[Outcome]]:
        """Per request, cedarpy's outcome for each host the address may stand for.

        An address several hosts resolve to is asked once per host, in rounds,
        so that within one batch a resource uid always means one entity.
        """
        interpretations: list[list[str | None]] = []
        for r in reqs:
            hosts: list[str | None] = [None]
            if r.action == "connectNetwork":
                hosts = list(self.host_of.get(ipaddress.ip_address(r.ip), [])) or [None]
            interpretations.append(hosts)
        out: list[list[Outcome]] = [[] for _ in reqs]
        for k in range(max((len(h) for h in interpretations), default=0)):
            todo = [(i, hs[k]) for i, hs in enumerate(interpretations) if len(hs) > k]
            for i, outcome in zip(
                [i for i, _ in todo], self._round([(reqs[i], h) for i, h in todo]), strict=True
            ):
                out[i].append(outcome)
        return out

    def _round(self, reqs: list[tuple[Request, str | None]]) -> list[Outcome]:
        """cedarpy on `reqs`; a class or default sandbox's anonymous principal
        is asked once per attribute profile (`profiles`), the outcomes joined:
        allowed only if allowed for every profile."""
        out: list[Outcome] | None = None
        for profile in self.profiles:
            got = self._round_as(reqs, profile)
            out = got if out is None else [
                a if a == b else Outcome(a.allow and b.allow, a.policies | b.policies)
                for a, b in zip(out, got, strict=True)
            ]
        assert out is not None
        return out

    def _round_as(
        self, reqs: list[tuple[Request, str | None]], profile: dict[str, Any]
    ) -> list[Outcome]:
        if self.isolate and len(reqs) > 1:
            # one batch shares one entity store: another request's resource
            # entity would exist for a policy that names it as a literal
            return [self._round_as([r], profile)[0] for r in reqs]
        entities: dict[tuple[str, str], dict[str, Any]] = dict(self.base)
        batch: list[dict[str, Any]] = []
        for r, host in reqs:
            p = self.sandboxes[r.sandbox].principal
            if (p.type, p.id) not in entities and p.id.startswith("manul:"):
                # an anonymous principal; an agent the entities do not hold
                # stays absent (Cedar: no attributes, no parents)
                parents = []
                if r.sandbox.startswith("AgentClass::"):
                    parents = [_uid("AgentClass", json.loads(r.sandbox.split("::", 1)[1]))]
                entities[(p.type, p.id)] = {
                    "uid": _uid(p.type, p.id),
                    "attrs": profile,
                    "parents": parents,
                }
            res = self._resource(r, host)
            entities[(res["uid"]["type"], res["uid"]["id"])] = res
            batch.append(
                {
                    "principal": _uid(p.type, p.id),
                    "action": _uid("Action", r.action),
                    "resource": res["uid"],
                    "context": {},
                }
            )
        results = cedarpy.is_authorized_batch(
            batch, self.policy_set, json.dumps(list(entities.values())), schema=SCHEMA
        )
        out: list[Outcome] = []
        for res in results:
            assert res.decision.value != "NoDecision", res.diagnostics.errors
            out.append(
                Outcome(res.allowed, frozenset(self.comp.policy_id(x)
                                               for x in res.diagnostics.reasons))
            )
        return out

    def check(self, reqs: list[Request], *, exact: bool) -> tuple[list[str], int]:
        """Mismatches, as messages (equality when `exact`, else soundness),
        and how many requests the kernel allowed."""
        problems: list[str] = []
        allowed = 0
        for r, cedar in zip(reqs, self.cedar(reqs), strict=True):
            k = self.kernel(r)
            allowed += k.allow
            approximated = bool(self.sandboxes[r.sandbox].approximations)
            if len(cedar) > 1 or not exact or approximated:
                # The kernel may only allow what Cedar allows for every host.
                if k.allow and not all(c.allow for c in cedar):
                    problems.append(f"unsound: {r}: kernel allows, cedar {cedar}")
            elif k != cedar[0]:
                problems.append(f"mismatch: {r}: kernel {k}, cedar {cedar[0]}")
        return problems, allowed


# ---- request generation -------------------------------------------------------

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_IP = re.compile(r'ip\("([^"]+)"\)')
_INT = re.compile(r"(?<![\w.])(\d{1,5})(?![\w.])")


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return str(json.loads('"' + s.replace("\\*", "\\u0001") + '"')).replace("\x01", "\\*")


def _literals(case: Case) -> tuple[list[str], list[str], list[int], list[tuple[str, int, str]]]:
    """Paths, networks, ports and (address, port, protocol) tuples near the policies."""
    strings = [_unescape(s) for s in _STRING.findall(case.policies)]
    paths = {"/"}
    for s in strings:
        if s.startswith("/"):
            cut = s.replace("\\*", "\0").split("*")[0].replace("\0", "*")
            paths.update({s.replace("\\*", "*"), cut, cut.rstrip("/")})
    for e in case.entities:
        if e["uid"]["type"] in ("FilePath", "Executable"):
            paths.add(e["uid"]["id"])
    nets = [*_IP.findall(case.policies), *WELL_KNOWN]
    dests: list[tuple[str, int, str]] = []
    members = [e["uid"]["id"] for e in case.entities if e["uid"]["type"] == "NetworkDestination"]
    members += re.findall(r'NetworkDestination::"([^"]+)"', case.policies)
    for ident in members:
        m = re.match(r"^\[?([^\[\]]+?)\]?:(\d+)/(tcp|udp)$", ident)
        if m:
            addrs = case.resolved.get(m.group(1), [m.group(1)])
            for a in addrs:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    continue
                nets.append(a)
                dests.append((a, int(m.group(2)), m.group(3)))
    for addrs in case.resolved.values():
        nets.extend(addrs)
    ports = {0, 1, 65535, 443, 80}
    for n in _INT.findall(case.policies):
        v = int(n)
        if v <= 65535:
            ports.update({v, max(v - 1, 0), min(v + 1, 65535)})
    return sorted(paths), nets, sorted(ports), dests


def _addresses(nets: list[str]) -> list[str]:
    out: set[str] = {"192.0.2.1", "2001:db8::1"}
    for text in nets:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        lo, hi = int(net.network_address), int(net.broadcast_address)
        top = 2**net.max_prefixlen - 1
        for v in (lo, hi, (lo + hi) // 2, max(lo - 1, 0), min(hi + 1, top)):
            a: ipaddress.IPv4Address | ipaddress.IPv6Address
            a = ipaddress.IPv4Address(v) if net.version == 4 else ipaddress.IPv6Address(v)
            if not (a.version == 6 and a in MAPPED):
                out.add(str(a))
    return sorted(out)


def requests(case: Case, comp: Compilation) -> st.SearchStrategy[Request]:
    paths, nets, ports, dests = _literals(case)
    addrs = _addresses(nets)
    sandboxes = [s.name for s in comp.sandboxes]
    alphabet = st.sampled_from(["/", "a", "b", "-", ".", "*", "x", "é"])
    suffix = st.one_of(
        st.just(""),
        st.sampled_from(["/", "a", "b", "/a", "-1", "*", "/x/y"]),
        st.text(alphabet, max_size=6),
    )
    path = st.one_of(
        st.builds(lambda p, s: p + s, st.sampled_from(paths), suffix),
        st.builds(lambda p, n: p[: max(1, len(p) - n)], st.sampled_from(paths), st.integers(0, 6)),
        st.builds(lambda s: "/" + s, st.text(alphabet, max_size=10)),
        st.builds(lambda p, n: p + "a" * n, st.sampled_from(paths), st.integers(240, 300)),
    )
    v4 = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
    v6 = (
        st.integers(0, 2**128 - 1)
        .map(ipaddress.IPv6Address)
        .filter(lambda a: a not in MAPPED)
        .map(str)
    )
    ip = st.one_of(st.sampled_from(addrs), st.sampled_from(addrs), v4, v6)
    port = st.one_of(st.sampled_from(ports), st.integers(0, 65535))
    file_req = st.builds(
        lambda sb, a, p: Request(sb, a, path=p),
        st.sampled_from(sandboxes),
        st.sampled_from(PATH_ACTIONS),
        path,
    )
    net_req = st.builds(
        lambda sb, i, p, proto: Request(sb, "connectNetwork", ip=i, port=p, protocol=proto),
        st.sampled_from(sandboxes),
        ip,
        port,
        st.sampled_from(["tcp", "udp"]),
    )
    if dests:
        member_req = st.builds(
            lambda sb, d: Request(sb, "connectNetwork", ip=d[0], port=d[1], protocol=d[2]),
            st.sampled_from(sandboxes),
            st.sampled_from(dests),
        )
        net_req = st.one_of(net_req, member_req)
    return st.one_of(file_req, net_req)
