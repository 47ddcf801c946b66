"""The split-clip protocol's guard (issue 32): a renderer that copies the truth whenever the truth is among
the source frames it is given scores near-perfect on the reversed-source protocol, where the truth of
output frame t is source frame N−1−t, and not on the split clip, whose truth is never in its source.

The test double is passed where the render stage chooses its renderer (lipdub.render.video.make_renderer);
the rest is the real pipeline (prep, energy audio model, render, mux) and the real evaluator on generated
media: the astronaut clip dubbed once with espeak-ng speech, so that its mouth moves like a talking clip's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lipdub.config import Settings
from lipdub.demo import moving_face_video, speak
from lipdub.eval.progress import EvalProgress
from lipdub.eval.protocols import Evaluator
from lipdub.eval.report import write_report
from lipdub.eval.results import ClipResult, EvalClip, EvalOptions
from lipdub.media.video import FrameReader, count_frames
from lipdub.pipeline import dub
from lipdub.prep.track import SourceTrack

SECONDS = 4.0  # 100 frames: halves of 50, and 2 s for the lip-colour baseline


def _frames(path: Path, width: int, height: int) -> np.ndarray:
    n = count_frames(path)
    with FrameReader(path, width, height, n) as reader:
        return np.stack([reader[i] for i in range(n)])


class CopyTruth:
    """Copies, for output frame t, the source frame nearest in pixels to the truth of frame t: the best any
    renderer that reuses source pixels could do, knowing the truth. (It copies the whole frame, head pose
    included, so the pose-bound mouth PSNR is not near-perfect; the landmark metrics, which align the
    faces first, are.)"""

    name = "copy-truth"

    def __init__(self, track: SourceTrack, truth: np.ndarray) -> None:
        s = track.summary
        with track.reader() as reader:
            self.frames = np.stack([reader[i] for i in range(s.n_frames)])
        self.landmarks = track.landmarks

        def small(x: np.ndarray) -> np.ndarray:
            return np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in x]).astype(np.float32)

        src, tru = small(self.frames), small(truth[:s.n_frames])
        self.best = [int(np.argmin(((src - t) ** 2).mean(axis=(1, 2, 3)))) for t in tru]

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
        # Which source frame this is (cut_off timeline: output frame t is source frame t).
        t = int(np.argmin(np.abs(self.landmarks - points).sum(axis=(1, 2))))
        return self.frames[self.best[t]].copy()


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The astronaut with a moving mouth (a warp-renderer dub of espeak speech) and that speech as its track."""
    root = tmp_path_factory.mktemp("talking")
    speech = speak("Hello there, we are testing the split clip protocol today, one two three four.",
                   root / "speech.wav")
    video = moving_face_video(root / "silent.mp4", seconds=SECONDS)
    out = root / "talking.mp4"
    dub(video, speech, out, Settings(data_dir=root / "var", renderer="warp", audio_model="energy"))
    return out


@pytest.fixture(scope="module")
def copy_truth_result(talking_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ClipResult, Path]:
    root = tmp_path_factory.mktemp("eval")
    settings = Settings(data_dir=root / "var", renderer="warp", audio_model="energy")
    work = root / "work"
    clip_id = "talking"
    made: list[str] = []

    def make_copy_truth(view: SourceTrack, settings: Settings, device: str = "cpu") -> CopyTruth:
        clip = work / clip_id / "input" / "clip.mp4"  # the evaluator's cut of the clip: the truth
        truth = _frames(clip, view.summary.width, view.summary.height)
        # Reversed source: the truth of output t is clip frame t; split clip: clip frame h + t.
        start = 0 if view.summary.n_frames == len(truth) else view.summary.n_frames
        made.append("reversed" if start == 0 else "split")
        return CopyTruth(view, truth[start:])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lipdub.render.video.make_renderer", make_copy_truth)
        with EvalProgress(3, quiet=True) as progress:
            evaluator = Evaluator(work, settings, EvalOptions(max_seconds=SECONDS), progress)
            result = evaluator.run_clip(EvalClip(clip_id, talking_clip), [])
    assert sorted(set(made)) == ["reversed", "split"]  # both protocols rendered with the double
    out = root / "report"
    write_report([result], out, EvalOptions(max_seconds=SECONDS), 0.0)
    return result, out


def test_copying_the_truth_passes_reversed_source_but_not_split_clip(
        copy_truth_result: tuple[ClipResult, Path]) -> None:
    result, _ = copy_truth_result
    rev, split = result.self_reenactment, result.split_clip
    assert rev["error"] is None and split["error"] is None
    r, s = rev["output"], split["output"]
    # Without the guard: the truth itself, re-encoded. Lips where the truth's are (LMD at the detector's
    # noise, under half the pass-through's), opening and width following the truth's.
    assert r["lmd_lips"] < 0.5 * rev["baseline"]["lmd_lips"] and r["moc"] > 0.95 and r["width_corr"] > 0.7
    # With it: the same renderer can only copy frames of the first half; nothing near-perfect is left, its
    # mouth follows the truth no better than the pass-through's.
    assert s["lmd_lips"] > 2 * r["lmd_lips"] and s["moc"] < 0.3 and s["width_corr"] < 0.4


def test_both_protocols_are_reported_with_contact_sheets(copy_truth_result: tuple[ClipResult, Path]) -> None:
    result, out = copy_truth_result
    assert result.split_clip["half_frames"] == 50 and result.frames == 100
    for key in ("lip_delta_e", "lip_chroma_ratio", "skin_texture_ratio", "lip_edge_ratio", "width_corr"):
        assert key in result.split_clip["output"] and key in result.self_reenactment["output"]
    assert result.ground_truth["lip_delta_e_2s"] >= 0
    md = (out / "report.md").read_text()
    assert "## Split clip" in md and "split: lipdub" in md and "## Picture" in md
    assert "judge it on the split clip" not in md
    write_report([result], out / "exemplar", EvalOptions(max_seconds=SECONDS), 0.0, {"renderer": "exemplar"})
    assert "judge it on the split clip" in (out / "exemplar" / "report.md").read_text()
    sheet = cv2.imread(str(out / "sheets" / "talking.png"))
    assert sheet is not None and sheet.shape[1] > 16 * 2 * 40  # 16 crops of a ~40-px mouth box at 2x
