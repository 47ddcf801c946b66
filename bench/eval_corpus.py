"""Quality benchmark: every protocol of `lipdub eval` on the fixed evaluation set (eval/eval_clips.json).

    python -m bench.eval_corpus [--out out/eval_corpus] [--max-seconds 10] [--cross-per-clip 1]

12 held-out clips (10 identities) cut to 10 s; per clip the split-clip and reversed-source protocols, and a
cross-dub with one of 4 non-English speech tracks (round-robin: de, fr, ja, zh). About 10-20 minutes on 2
CPU cores. Writes report.md, report.json, plots/ and sheets/ (contact sheets of mouth crops) under --out and
prints the markdown report; copy the medians into BENCHMARKS.md. Needs ../shared/corpus (or
LIPDUB_CORPUS); exits 0 with a note when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lipdub.config import Settings
from lipdub.eval.protocols import load_eval_clips, run_evaluation
from lipdub.eval.results import EvalOptions

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("LIPDUB_CORPUS", DEFAULT_CORPUS)))
    parser.add_argument("--out", type=Path, default=Path("out/eval_corpus"))
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--cross-per-clip", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="clip ids to run (default: all)")
    args = parser.parse_args(argv)
    if not (args.corpus / "manifest.csv").is_file():
        print(f"eval_corpus: no corpus at {args.corpus}; skipped (set LIPDUB_CORPUS)")
        return 0
    clips, audios = load_eval_clips(args.corpus)
    if args.only:
        clips = [c for c in clips if c.id in set(args.only)]
    settings = Settings(data_dir=args.out / "var")
    results = run_evaluation(clips, audios, args.out, settings, EvalOptions(max_seconds=args.max_seconds),
                             args.cross_per_clip)
    print((args.out / "report.md").read_text())
    medians = json.loads((args.out / "report.json").read_text())["medians"]
    print(json.dumps(medians, indent=1))
    return 0 if len(results) == len(clips) else 1


if __name__ == "__main__":
    sys.exit(main())
