"""The behavioural baseline: each agent's normal, learned in the kernel, and its anomalies.

- `events`: what the kernel reports (items, novel activities) and its keys;
- `sensor`: bpf/baseline.bpf.c loaded and fed (whom to watch, what is known);
- `profile`: one agent's learned baseline, with generalisation;
- `catalog`: credentials and metadata endpoints the detectors know;
- `detect`: the detectors (`new-exec`, `credential-access`, `new-destination`,
  `port-scan`, `metadata-endpoint`, `gateway-bypass`);
- `store`: profiles on disk, kept across restarts;
- `service`: all of it together, as `manul run` runs it;
- `suggest`: a least-privilege Cedar sandbox from a learned baseline.

docs/baseline.md describes the whole.
"""
