"""Compiled means equivalent: the reference evaluator vs cedarpy.

For every policy set of the corpus, hypothesis draws kernel requests near
the policies' own literals; the compiled map entries (through the reference
evaluator, which only sees bytes) and `cedarpy.is_authorized` on the source
policies must agree on the decision *and* on the deciding policies. For the
approximated sets, the kernel must only be sound: never allow what Cedar
denies. The CI-size run is small; `-m slow` runs the nightly size.
"""

from __future__ import annotations

import time

import pytest
from cedar_corpus import CASES
from cedar_oracle import Case, Oracle, requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

CI_EXAMPLES, CI_BATCH = 5, 200  # 1,000 requests per policy set
NIGHTLY_EXAMPLES, NIGHTLY_BATCH = 20, 300  # 6,000 per set, > 200,000 in all
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)
    assert sum(c.exact for c in CASES) >= 30


def run_case(case: Case, examples: int, batch: int) -> tuple[int, int]:
    """Check `examples` batches of `batch` requests; return (requests, allowed)."""
    comp = case.compile()
    approximated = [a for s in comp.sandboxes for a in s.approximations]
    # The corpus says which sets are approximated; the compiler must agree.
    assert bool(approximated) == (not case.exact), approximated
    oracle = Oracle(case, comp)
    seen = {"requests": 0, "allowed": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.generate,),  # failures print the mismatching requests; no shrinking
        suppress_health_check=_SUPPRESS,
    )
    @given(st.lists(requests(case, comp), min_size=batch, max_size=batch))
    def check(reqs: list) -> None:  # type: ignore[type-arg]
        problems, allowed = oracle.check(reqs, exact=case.exact)
        assert not problems, "\n".join(problems[:10])
        seen["requests"] += len(reqs)
        seen["allowed"] += allowed

    check()
    return seen["requests"], seen["allowed"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_compiled_equals_cedar(case: Case) -> None:
    n, allowed = run_case(case, CI_EXAMPLES, CI_BATCH)
    assert n >= CI_EXAMPLES * CI_BATCH
    # Vacuity guard: the requests reach both outcomes.
    assert 0 < allowed < n, f"{case.name}: {allowed} of {n} allowed"


@pytest.mark.slow
def test_compiled_equals_cedar_nightly(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    total = 0
    for case in CASES:
        n, _ = run_case(case, NIGHTLY_EXAMPLES, NIGHTLY_BATCH)
        total += n
    elapsed = time.monotonic() - start
    with capsys.disabled():
        print(
            f"\ndifferential: {total} requests over {len(CASES)} policy sets, "
            f"0 mismatches, {elapsed:.1f} s"
        )
    assert total >= 100_000
