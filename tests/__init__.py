"""nea's test suite (``trial tests``).

Hypothesis: no per-example deadline and no "too slow" health check. The suite
runs on two shared cores, and how fast an example runs there says nothing about
whether the property holds; a property that can fail only by timing would be
a flaky test.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "nea", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile("nea")
