"""Manul's node agent: the daemon, its kernel runtime and its command line.

The layout follows DESIGN.md: `kernel` talks to libbpf, `workloads` maps
cgroups to pods or units, `registry` holds the records, and the feature
packages (`discovery`, `sandbox`, `baseline`, `decision`) sit on top, with
`telemetry` for what they report and `cli`/`commands` as the outermost layer.
"""

__version__ = "0.1.0"
