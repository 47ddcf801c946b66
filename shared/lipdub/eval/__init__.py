"""Quality evaluation of lip-sync output (`lipdub eval`, bench/eval_corpus.py): CPU only, no weights.

Modules
- signals: per-frame mouth opening (inner-lip gap / inner mouth width, 3-tap median), speech-band
  (300-3000 Hz) log-RMS envelope over 40-ms windows at 25 fps, energy VAD, silence behaviour.
- sync: offset of mouth vs audio by cross-correlation over ±15 frames (offset, sub-frame refined; peak r;
  r at 0 and best r within ±2 frames; confidence = peak − median r; median offset of sliding 3-s windows).
  Positive offset = the mouth moves after the sound (video lags audio).
- lmd: LMD on the 40 lip landmarks and on the jaw line after a similarity alignment on stable points,
  ×100 / inter-ocular distance (our own scale); mouth-opening correlation (MOC); lip jitter. Beside MOC,
  `width_corr`: the same correlation of the mouth width (outer corners / inter-ocular, signals.py).
- image: mouth-crop PSNR/SSIM against the pose-aligned ground truth, PSNR/SSIM outside the face against
  the source, mouth sharpness ratio (variance of the Laplacian, output / source), seam score (colour and
  gradient jump across the lower-face boundary, output against source).
- picture: at the frame's own resolution, output against the source frame it was rendered from: lip colour
  (median CIEDE2000 of the mean lip colour, `lip_delta_e`, read against the same person's lips 2 s apart,
  `lip_delta_e_2s` in the ground truth; CIELAB chroma ratio `lip_chroma_ratio`), lower-face skin texture
  (`skin_texture_ratio`, Laplacian variance with both frames' lips cut out), drawn edges (`lip_edge_ratio`,
  gradient energy in a thin band along the outer lip contour), teeth (`teeth_fraction` of the output's open
  frames vs `teeth_fraction_source` of the source's own). Definitions in picture.py's docstring.
- sheets: contact sheets, sheets/<clip>.png: 16 mouth crops per protocol, source above output, 2x.
- tracks: 25-fps clip cutting, reversing, raw face-mesh tracks of whole videos.
- protocols: ground truth; split clip (source = the clip's first half, audio and truth = its second half;
  baseline: the source half); self-reenactment with a reversed source (baseline: the reversed clip);
  cross-dubbing (baseline: the untouched clip re-timed by the same sync-mode timeline).
- report: report.json, report.md (per clip and medians), plots/<clip>.png, plots/summary.png, sheets/.

Reading the numbers
- Sync r measures how well mouth opening follows audio *energy*. A mouth driven by energy (our fallback
  audio model) scores far above real speech (ground truth r ≈ 0.37 on the evaluation set): above-GT sync
  is not better sync, exactly as with SyncNet scores in the literature. Compare offsets with the
  ground-truth offset (Δk), and read sync together with MOC and LMD from the reversed-source protocol,
  which only an audio model that predicts real mouth shapes can pass.
- Reversed source hands the renderer the truth: output frame t's truth is source frame N−1−t. A renderer
  that draws from the source's own frames (DINet's reference lip detail, exemplar mouths) can copy it, and
  a copy of the truth scores near-perfect there (tests/test_eval_protocols.py). Split clip can't be gamed
  so: the truth frames are never in the source. Judge any renderer that reuses source pixels on split
  clip; reversed source stays for comparison with earlier figures.
- Several evaluation clips are 1-3 s long; their per-clip sync numbers are noisy, and split clip halves
  them (a half under 13 frames is not dubbed: reported as an error). Use the medians.

`eval_clips.json` (next to this file) is the fixed, identity-based evaluation set (split 0 of
reference/audio_model_feasibility.md). Its identities are held out of every training run so that numbers
recorded in BENCHMARKS.md stay comparable over time.
"""
