"""Quality evaluation of lip-sync output (`lipdub eval`, bench/eval_corpus.py): CPU only, no weights.

Modules
- signals: per-frame mouth opening (inner-lip gap / inner mouth width, 3-tap median), speech-band
  (300-3000 Hz) log-RMS envelope over 40-ms windows at 25 fps, energy VAD, silence behaviour.
- sync: offset of mouth vs audio by cross-correlation over ±15 frames (offset, sub-frame refined; peak r;
  r at 0 and best r within ±2 frames; confidence = peak − median r; median offset of sliding 3-s windows).
  Positive offset = the mouth moves after the sound (video lags audio).
- lmd: LMD on the 40 lip landmarks and on the jaw line after a similarity alignment on stable points,
  ×100 / inter-ocular distance (our own scale); mouth-opening correlation (MOC); lip jitter.
- image: mouth-crop PSNR/SSIM against the pose-aligned ground truth, PSNR/SSIM outside the face against
  the source, mouth sharpness ratio (variance of the Laplacian, output / source), seam score (colour and
  gradient jump across the lower-face boundary, output against source).
- tracks: 25-fps clip cutting, reversing, raw face-mesh tracks of whole videos.
- protocols: ground truth, self-reenactment with a reversed source (baseline: the reversed clip),
  cross-dubbing (baseline: the untouched clip re-timed by the same sync-mode timeline).
- report: report.json, report.md (per clip and medians), plots/<clip>.png and plots/summary.png.

Reading the numbers
- Sync r measures how well mouth opening follows audio *energy*. A mouth driven by energy (our fallback
  audio model) scores far above real speech (ground truth r ≈ 0.37 on the evaluation set): above-GT sync
  is not better sync, exactly as with SyncNet scores in the literature. Compare offsets with the
  ground-truth offset (Δk), and read sync together with MOC and LMD from the reversed-source protocol,
  which only an audio model that predicts real mouth shapes can pass.
- Several evaluation clips are 1-3 s long; their per-clip sync numbers are noisy. Use the medians.

`eval_clips.json` (next to this file) is the fixed, identity-based evaluation set (split 0 of
reference/audio_model_feasibility.md). Its identities are held out of every training run so that numbers
recorded in BENCHMARKS.md stay comparable over time.
"""
