"""Manul's Cedar sandbox compiler: policy text in, kernel map entries out.

Pure Python, no I/O and no kernel access (it never imports `agent`). The
pipeline, Cedar style, one module per stage:

    parse     Cedar text -> per-policy JSON (EST), with locations   parse.py, source.py
    ir        EST -> `ir.Policy` (expr.py trees); per sandbox and   policy.py, ir.py,
              kernel action, a `Formula` over resource atoms        specialize.py, avalue.py,
                                                                    resource.py, values.py
    validate  schema (cedarpy), kernel limits, the layer split      validate.py, limits.py
    lower     formulas -> regions -> LPM map entries (bytes)        regions.py, lower.py,
                                                                    layout.py

The schema is `schema.cedarschema` (read by schema.py), the entities file is
read by entities.py, errors are in errors.py, results in result.py.

`compile_policies` runs it all (pipeline.py) and returns a `Compilation`;
`SandboxEvaluator` (evaluate.py) decides requests from the bytes the way the
BPF side will; `Querier` (query.py) answers `manul compile --query`.
"""

from compiler.errors import CompileError, Diagnostic, Location
from compiler.evaluate import SandboxEvaluator, Verdict
from compiler.loader import LoadedPolicies, load_policies
from compiler.parse import PolicySource
from compiler.pipeline import EntitiesSource, compile_policies
from compiler.query import Answer, Querier
from compiler.result import (
    Approximation,
    Compilation,
    CompiledSandbox,
    GatewayItem,
    MapEntry,
    PolicyReport,
    Provenance,
)
from compiler.schema import load_schema

__all__ = [
    "Answer",
    "Approximation",
    "Compilation",
    "CompileError",
    "CompiledSandbox",
    "Diagnostic",
    "EntitiesSource",
    "GatewayItem",
    "LoadedPolicies",
    "Location",
    "MapEntry",
    "PolicyReport",
    "PolicySource",
    "Provenance",
    "Querier",
    "SandboxEvaluator",
    "Verdict",
    "compile_policies",
    "load_policies",
    "load_schema",
]
