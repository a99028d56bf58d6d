"""Run ``python -m MODULE ARGS`` under cProfile; SIGUSR1 writes the statistics to PATH.

    python bench/profiled.py PATH MODULE [ARGS...]

A daemon stopped by SIGTERM re-raises the signal after its reactor stops (so its
exit status tells), which skips ``python -m cProfile``'s write-out; a signal of
our own does not.

With ``NEA_PROFILE_CLOCK=cpu`` in its environment the profile counts the
thread's CPU time rather than wall-clock time: where processes share too few
cores, wall-clock time charges a function with the time its process waited to
run. Each call then costs more to profile (the CPU clock is a system call).
"""

import cProfile
import os
import runpy
import signal
import sys
import time


def main() -> None:
    path, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    cpu = os.environ.get("NEA_PROFILE_CLOCK") == "cpu"
    profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()

    def dump(signum, frame) -> None:
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, dump)
    profiler.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
