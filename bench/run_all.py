"""Run every benchmark in turn; each prints one JSON line (recorded in docs/BENCHMARKS.md).

.venv/bin/python bench/run_all.py        (what `make bench` runs)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["bench_physics.py", "bench_sim_node.py", "bench_bc_inference.py", "bench_policy_node.py", "bench_gpayn.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHES:
        print(f"## {name}", flush=True)
        result = subprocess.run([sys.executable, str(here / name)], text=True, capture_output=True)
        lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
        print(lines[-1] if lines else "(no output)")
        if result.returncode != 0:
            failed += 1
            print(result.stderr[-2000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
