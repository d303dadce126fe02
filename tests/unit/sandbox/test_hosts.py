"""HostCache's logging: a name that cannot be resolved is a warning once per error."""

from __future__ import annotations

import logging

import pytest

from agent.sandbox.hosts import HostCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_unresolvable_host_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    answers: dict[str, list[str]] = {}

    def resolver(host: str) -> tuple[list[str], float]:
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host], 30.0

    cache = HostCache(resolver, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="agent.sandbox.hosts"):
        for _ in range(5):
            cache.resolve(["api.example"])
            clock.now += 10
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "api.example" in warnings[0].getMessage()
        assert cache.failures == 5
        answers["api.example"] = ["127.0.0.5"]
        assert cache.resolve(["api.example"]) == {"api.example": ("127.0.0.5",)}
        assert any("resolves again" in r.getMessage() for r in caplog.records)
