"""nea's test suite.

Hypothesis times each example (200 ms by default) and calls a test flaky when a
slow first run passes when repeated: on a loaded machine that is the machine, not
the code. The suite's profile turns the wall-clock deadline and the too-slow
health check off; what an example does is still checked in full.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("nea", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("nea")
