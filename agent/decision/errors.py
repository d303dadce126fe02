"""The decision point's errors, one class per way a decision can fail.

Every one of them ends in a denial, never in a crashed server: `decide`
turns an `IdentityError` into a 401, a `RequestError` or `DelegationError`
into a 403 with the message as the reason, and a `PolicyLoadError` keeps the
previous policy set in force. Messages follow the project's style:
lowercase, user input in backticks, parts joined with colons.
"""

from __future__ import annotations

from agent.errors import ManulError


class DecisionError(ManulError):
    """Base class of everything the decision point raises on purpose."""


class IdentityError(DecisionError):
    """The caller could not be authenticated with its registered mechanism."""


class RequestError(DecisionError):
    """The checked request cannot be mapped to a Cedar request (or is malformed)."""


class DelegationError(DecisionError):
    """The on-behalf-of token of a delegated call is missing a claim, forged or stale."""


class PolicyLoadError(DecisionError):
    """A policy file does not parse or does not validate against the schema."""


class TokenError(DecisionError):
    """A token could not be minted, or a key could not be loaded or stored."""
