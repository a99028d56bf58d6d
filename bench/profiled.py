"""Run ``python -m MODULE ARGS`` under cProfile; SIGUSR1 writes the statistics to PATH.

    python bench/profiled.py PATH MODULE [ARGS...]

A daemon stopped by SIGTERM re-raises the signal after its reactor stops (so its
exit status tells), which skips ``python -m cProfile``'s write-out; a signal of
our own does not.
"""

import cProfile
import runpy
import signal
import sys


def main() -> None:
    path, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    profiler = cProfile.Profile()

    def dump(signum, frame) -> None:
        profiler.disable()
        profiler.dump_stats(path)

    signal.signal(signal.SIGUSR1, dump)
    profiler.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
