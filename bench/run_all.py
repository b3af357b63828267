"""Run every ``bench/bench_*.py`` in turn (never two at once: they would disturb each other's timings)
and print their markdown tables. Exits non-zero if any benchmark failed.

Run: ``.venv/bin/python bench/run_all.py [NAME ...]`` — names filter, e.g. ``wire`` runs bench_wire.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only benchmarks whose file name contains one of these")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if any(n in s.stem for n in args.names)]
    if not scripts:
        print(f"no benchmark matches {args.names}", file=sys.stderr)
        return 2
    failed = []
    for script in scripts:
        print(f"## {script.name}\n", flush=True)
        start = time.monotonic()
        code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
        print(f"\n_{script.name}: {time.monotonic() - start:.0f} s, exit {code}_\n", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
