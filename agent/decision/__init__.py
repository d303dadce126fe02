"""The local decision point: Envoy ext_authz v3 on a node-local Unix socket.

A gateway asks, before it forwards an agent's call: who is calling, may it
do this, and with what credential does the call go on. `decide.DecisionPoint`
answers without any gRPC in sight (identity -> request mapping -> Cedar ->
per-hop token); `server` puts it behind the Authorization service on a Unix
socket whose peers are checked at accept time (`peer`); `sources` reloads
registry and policies atomically. See docs/decision.md.
"""
