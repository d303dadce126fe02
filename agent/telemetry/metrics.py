"""Every Prometheus metric Manul exports, declared in one place.

docs/metrics.md lists the same names; tests/unit/telemetry checks the two
agree. Feature packages import the metric objects from here rather than
declaring their own, so names, labels and help texts stay consistent.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# -- runtime -----------------------------------------------------------------
BPF_ERRORS = Counter(
    "manul_bpf_errors_total",
    "Errors counted inside BPF programs (ring buffer full, failed map update, ...).",
    ["object", "kind"], registry=REGISTRY)
RINGBUF_EVENTS = Counter(
    "manul_ringbuf_events_total", "Ring-buffer records consumed by the agent.",
    ["ringbuf"], registry=REGISTRY)
MECHANISM = Gauge(
    "manul_mechanism_info",
    "Which kernel mechanism enforces or observes each concern (1 = in use).",
    ["concern", "mechanism"], registry=REGISTRY)

AUDIT_AGGREGATED = Counter(
    "manul_audit_aggregated_total",
    "Repeated audit records folded into one aggregated record (its `count`), by kind.",
    ["kind"], registry=REGISTRY)
AUDIT_SUPPRESSED = Counter(
    "manul_audit_suppressed_total",
    "Audit records not written because the workload's record budget was spent, or events "
    "held back in the kernel by its event budget (each is reported as `suppressed` in a "
    "later record), by kind.", ["kind"], registry=REGISTRY)
RINGBUF_DROPPED = Counter(
    "manul_ringbuf_dropped_total",
    "Ring-buffer records lost because the buffer was full (counted in the kernel).",
    ["ringbuf"], registry=REGISTRY)

# -- discovery ---------------------------------------------------------------
LLM_HANDSHAKES = Counter(
    "manul_llm_handshakes_total", "TLS handshakes to LLM providers, by classification.",
    ["classification", "provider"], registry=REGISTRY)
SHADOW_WORKLOADS = Gauge(
    "manul_shadow_workloads", "Workloads calling LLM providers without a registration.",
    registry=REGISTRY)

QUARANTINE_REFUSED = Counter(
    "manul_quarantine_refused_total",
    "Connections and datagrams of quarantined workloads refused, counted in the kernel "
    "(exact).", ["workload"], registry=REGISTRY)

# -- sandbox -----------------------------------------------------------------
SANDBOX_DECISIONS = Counter(
    "manul_sandbox_decisions_total",
    "Sandbox denials and would-denials, counted in the kernel (exact, events delivered or "
    "not).", ["action", "verdict", "mode"], registry=REGISTRY)
SANDBOX_RULE_DECISIONS = Counter(
    "manul_sandbox_rule_decisions_total",
    "Sandbox denials and would-denials per bound workload and rule, counted in the kernel.",
    ["sandbox", "workload", "action", "verdict", "policies"], registry=REGISTRY)
SANDBOX_EVENTS_HELD = Counter(
    "manul_sandbox_events_held_total",
    "Sandbox decisions counted but not sent to user space: the workload's or the node's "
    "kernel event budget was spent.", registry=REGISTRY)
SANDBOX_UNTRACKED = Counter(
    "manul_sandbox_untracked_total",
    "Sandbox decisions in manul_sandbox_decisions_total but missing from "
    "manul_sandbox_rule_decisions_total: the kernel's per-rule table was full.",
    registry=REGISTRY)

# -- decision point ----------------------------------------------------------
AUTHZ_DECISIONS = Counter(
    "manul_authz_decisions_total", "ext_authz decisions.", ["decision"], registry=REGISTRY)
AUTHZ_SERVING = Gauge(
    "manul_authz_serving",
    "1 while the decision point can answer (a policy set is loaded and its socket accepts), "
    "else 0.", registry=REGISTRY)
AUTHZ_LATENCY = Histogram(
    "manul_authz_decision_seconds", "Time to decide one ext_authz Check.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
    registry=REGISTRY)

# -- behavioural baseline ----------------------------------------------------
ANOMALIES = Counter(
    "manul_anomalies_total", "Anomalies found by the behavioural baseline's detectors.",
    ["detector", "agent"], registry=REGISTRY)
ANOMALIES_SUPPRESSED = Counter(
    "manul_anomalies_suppressed_total",
    "Anomaly records not written by the per-workload, per-detector rate limit (each is "
    "still counted in manul_anomalies_total).", ["detector"], registry=REGISTRY)
BASELINE_EVENTS = Counter(
    "manul_baseline_events_total",
    "Behaviour events of watched workloads, counted in the kernel: seen, sent (novel), "
    "known (filtered in the kernel), lost (novel, ring buffer full).",
    ["kind", "outcome"], registry=REGISTRY)
BASELINE_PROFILES = Gauge(
    "manul_baseline_profiles", "Behaviour profiles on this node, by state.", ["state"],
    registry=REGISTRY)
