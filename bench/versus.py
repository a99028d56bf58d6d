"""Before and after in one run: a bench script of two checkouts, run in turns.

Each checkout runs its own copy of the script with its own virtualenv, in
alternation (A B A B ...), so that a change in the machine's load during the
run falls on both sides alike. Every output line is printed as it comes, marked
with its side; the last line of each run is collected and shown side by side at
the end.

    .venv/bin/python bench/versus.py --before ../before --rounds 3 hot_path.py
    .venv/bin/python bench/versus.py --before ../before relay_throughput.py --seconds 8
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(checkout: Path, script: str, args: list[str]) -> list[str]:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run(
        [str(python), str(checkout / "bench" / script), *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode:
        sys.exit(f"{checkout}: {script} failed ({done.returncode}):\n{done.stderr}")
    return [line for line in done.stdout.splitlines() if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, required=True, help="the other checkout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("script", help="a script in bench/, e.g. hot_path.py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    args = p.parse_args()
    sides = {"before": args.before.resolve(), "after": HERE}
    last: dict[str, list[str]] = {side: [] for side in sides}
    for round_ in range(1, args.rounds + 1):
        for side, checkout in sides.items():
            lines = run(checkout, args.script, args.args)
            for line in lines:
                print(f"[{side} {round_}] {line}", flush=True)
            last[side].append(lines[-1] if lines else "(no output)")
    print()
    for side in sides:
        print(f"{side} ({sides[side]}):")
        for line in last[side]:
            print(f"  {line}")


if __name__ == "__main__":
    main()
