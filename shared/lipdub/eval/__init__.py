"""Quality evaluation of lip-sync output: sync, landmark and image metrics, protocols and reports.

`eval_clips.json` (next to this file) is the fixed, identity-based evaluation set. Its identities are held
out of every training run so that numbers recorded in BENCHMARKS.md stay comparable over time.
"""
