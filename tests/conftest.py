"""Hypothesis profiles shared by every suite.

`dev` keeps the local loop quick, `ci` is what `nox -s tests` runs (a few hundred examples
per property, so the whole command stays within five minutes on two cores), and `deep` is
the long soak (`nox -s tests -- --hypothesis-profile=deep`, 50,000 examples each).
Deadlines are off because shared CI machines make per-example timing meaningless; budgets
live in the benchmarks instead.
`ci` is derandomized so a landing never hinges on which examples a run happened to draw;
`dev` and `deep` draw fresh examples every run and are where new counterexamples come from.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = ["conftest_store"]

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep", max_examples=50_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("dev")
