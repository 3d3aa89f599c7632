"""Hypothesis profiles: ``ci`` is thorough but bounded; ``dev`` is quick.

Select one with ``HYPOTHESIS_PROFILE``; ``ci`` is the default where ``CI`` is set.
``ci-floors`` is ``dev``'s size, derandomized like ``ci``: CI runs the suite a second
time on the minimum versions of the dependencies, where what is looked for is an API a
floor lacks, not a rare input (the thorough search ran on the current versions).
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("ci-floors", settings.get_profile("dev"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
