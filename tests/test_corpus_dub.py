"""`lipdub dub` on real talking clips with a real speech track in another language (needs ../shared/corpus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipdub import FPS
from lipdub.audio.analyze import analyze_audio
from lipdub.face import landmarks as L
from lipdub.face.mesh import FaceMesh
from lipdub.media.audio import load_audio
from lipdub.media.probe import probe
from lipdub.media.video import FrameReader, count_frames
from lipdub.pipeline import dub
from tests.test_dub_e2e import envelope

CLIPS = [
    "OpenTalker_video-retalking__face-1.mp4",
    "KwaiVGI_LivePortrait__d20.mp4",
    "OpenTalker_SadTalker__WDA_AlexandriaOcasioCortez_000.mp4",
]
SPEECH = "ali-vilab_dreamtalk__German2.wav"


@pytest.mark.corpus
@pytest.mark.parametrize("clip", CLIPS)
def test_dub_real_clip_with_german_speech(corpus: Path, clip: str, tmp_path: Path) -> None:
    from lipdub.config import Settings

    video, audio = corpus / "talking" / clip, corpus / "speech" / SPEECH
    out = tmp_path / "dubbed.mp4"
    result = dub(video, audio, out, Settings(data_dir=tmp_path / "var"))
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert abs(info.duration - probe(audio).duration) <= 1 / result.fps
    assert info.video.fps == pytest.approx(result.fps, rel=1e-4)

    measured: list[float] = []
    with FaceMesh() as mesh, FrameReader(out, info.video.width, info.video.height, count_frames(out),
                                         fps=result.fps) as frames:
        for frame in frames:
            faces = mesh(frame)
            measured.append(float(L.mouth_opening(faces[0])) if faces else np.nan)
    opening = np.array(measured)
    ok = ~np.isnan(opening)
    assert ok.mean() > 0.95
    # The rendered mouth follows what the audio model asked for...
    # (The output keeps the clip's own frame rate: the 25-fps targets are read at its frames' times.)
    at_25 = np.arange(len(opening)) * FPS / result.fps
    mouth = analyze_audio(audio, tmp_path / "audio", Settings(data_dir=tmp_path / "var"))
    target = np.interp(at_25, np.arange(len(mouth.opening)), mouth.opening)
    r_target = np.corrcoef(opening[ok], target[ok])[0, 1]
    # ...and so moves with the German speech (the loudness envelope is only a proxy of mouth shape).
    env25 = envelope(load_audio(audio), int(np.ceil(at_25[-1])) + 2)
    env = np.interp(at_25, np.arange(len(env25)), env25)
    r_env = np.corrcoef(opening[ok], env[ok])[0, 1]
    print(f"{clip} at {result.rate} fps: r(target)={r_target:.2f} r(envelope)={r_env:.2f}")
    assert r_target > 0.6, f"{clip}: rendered mouth vs audio model target r={r_target:.2f}"
    assert r_env > 0.2, f"{clip}: mouth opening vs German speech envelope r={r_env:.2f}"
    assert result.passed_through < 0.05 * result.frames
