"""`make bench` / `python -m bench [NAME ...]`: run every benchmark module (bench_*.py, eval_*.py) in turn.

Each benchmark is its own process (`python -m bench.NAME`) so memory figures are not polluted by the
others; they print their results and update nothing by themselves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(names: list[str]) -> int:
    here = Path(__file__).parent
    modules = names or sorted(p.stem for p in here.glob("*.py") if p.stem.startswith(("bench_", "eval_")))
    failed = 0
    for name in modules:
        print(f"== bench.{name}", flush=True)
        failed += subprocess.run([sys.executable, "-m", f"bench.{name}"]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
