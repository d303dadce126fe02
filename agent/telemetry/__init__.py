"""What Manul reports: Prometheus metrics, OpenTelemetry spans, the audit log."""
