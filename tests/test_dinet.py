"""DINet renderer: both configs, checkpoints, a training step, the renderer inside the render stage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lipdub.render.dinet import (
    CONFIGS,
    REF_CHANNELS,
    SOURCE_CHANNELS,
    ChecksumError,
    DinetGenerator,
    count_flops,
    load_checkpoint,
    save_checkpoint,
)
from lipdub.render.protocols import Rendered


@pytest.fixture(scope="module")
def demo_track(demo_inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    from lipdub.config import Settings
    from lipdub.prep.source import prepare_source

    out = tmp_path_factory.mktemp("dinet_track")
    return prepare_source(demo_inputs[0], out / "prep", Settings(data_dir=out / "var"))


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "dinet_mini.pt"
    save_checkpoint(path, DinetGenerator(CONFIGS["mini"]))
    return path


@pytest.mark.parametrize("name", ["mini", "full"])
def test_config_shapes_and_cost(name: str) -> None:
    cfg = CONFIGS[name]
    model = DinetGenerator(cfg).eval()
    size = cfg.size if name == "mini" else 64  # full is fully convolutional: check its shapes small and fast
    src = torch.rand(2, SOURCE_CHANNELS, size, size)
    refs = torch.rand(2, REF_CHANNELS * cfg.refs, size, size)
    with torch.no_grad():
        out = model(src, refs)
    assert out.shape == (2, 3, size, size)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # Outside the (grown) mouth mask the output is the source, bit for bit: the face cannot drift.
    mask = torch.zeros(2, 1, size, size)
    mask[..., size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 1
    src[:, 3:4] = mask
    with torch.no_grad():
        out = model(src, refs)
    far = torch.ones(size, size, dtype=torch.bool)
    far[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = False
    assert torch.equal(out[..., far], src[:, :3][..., far])
    if name == "mini":
        per_frame, _ = count_flops(model)
        assert 30e6 < per_frame <= 150e6, per_frame  # the CPU budget (DH_live mini: 50-103 MFLOPs)
        assert cfg.size in range(96, 129) and cfg.refs == 3
    else:
        assert cfg.size == 256 and cfg.refs == 5
        assert sum(p.numel() for p in model.parameters()) > 10 * sum(
            p.numel() for p in DinetGenerator(CONFIGS["mini"]).parameters())


def test_checkpoint_hash_and_config_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = DinetGenerator(CONFIGS["full"])
    path = tmp_path / "g.pt"
    digest = save_checkpoint(path, model, extra={"step": 7})
    loaded, extra = load_checkpoint(path)
    assert loaded.config == CONFIGS["full"] and extra["step"] == 7
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    load_checkpoint(path, sha256=digest)
    with pytest.raises(ChecksumError):
        load_checkpoint(path, sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_checkpoint(path)
    path.with_suffix(".pt.sha256").unlink()
    with pytest.raises(ChecksumError):
        load_checkpoint(path)


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    """Loading is tensor-only: a checkpoint carrying an arbitrary object is rejected even with a valid hash."""
    from lipdub.digest import sha256_file

    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "config": {}, "generator": {}, "extra": {"x": Path("/")}}, path)
    path.with_suffix(".pt.sha256").write_text(sha256_file(path) + "  evil.pt\n")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(path)


def test_training_steps_reduce_loss(demo_track, tmp_path: Path) -> None:
    from lipdub.render.dataset import WindowSampler
    from lipdub.render.enroll import track_windows
    from lipdub.render.train import TrainOptions, reconstruction_loss, train

    clip = track_windows(demo_track, 96, 6, max_frames=24)
    sampler = WindowSampler([clip], 96, 3, seed=5, augment=False)
    src, ref, tgt = (torch.from_numpy(x) for x in sampler.batch((123,), 8))

    def loss_of(path: Path) -> float:
        model, _ = load_checkpoint(path)
        with torch.no_grad():
            return float(reconstruction_loss(model(src, ref), tgt, src[:, 3:4], 1.0)[0])

    opts = TrainOptions(steps=2, batch=4, coarse=0.0, gan_start=0.5, save_every=2, eval_every=10**9)
    first = train(tmp_path / "run", [clip], [], opts, log=False)
    before = loss_of(first)
    # Resuming continues from the saved state (step 2) rather than starting again.
    opts.steps = 25
    final = train(tmp_path / "run", [clip], [], opts, log=False)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert int(state["step"]) == 25
    assert loss_of(final) < 0.8 * before


def test_make_renderer_falls_back_to_warp_without_weights(demo_track, tmp_path: Path) -> None:
    from lipdub.config import Settings
    from lipdub.render import make_renderer

    s = Settings(data_dir=tmp_path, renderer="dinet", dinet_weights=tmp_path / "missing.pt")
    assert make_renderer(demo_track, s).name == "warp"
    assert make_renderer(demo_track, Settings(data_dir=tmp_path, renderer="warp")).name == "warp"


def test_dinet_renderer_inside_render_video(demo_track, mini_checkpoint: Path, tmp_path: Path) -> None:
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.face import landmarks as L
    from lipdub.media.video import FrameReader, count_frames
    from lipdub.render import make_renderer
    from lipdub.render.paste import lower_face_mask
    from lipdub.render.video import render_video
    from lipdub.render.warp import WarpRenderer
    from lipdub.timeline import Timeline

    settings = Settings(data_dir=tmp_path / "var", renderer="dinet", dinet_weights=mini_checkpoint)
    assert make_renderer(demo_track, settings).name == "dinet"
    n = 12
    opening = np.linspace(0.0, 0.5, n).astype(np.float32)
    mouth = MouthTrack(opening, np.ones(n, bool))
    timeline = Timeline(demo_track.summary.n_frames, n, "cut_off")
    out = tmp_path / "part.mp4"
    passed = render_video(demo_track, mouth, timeline, out, settings, frames=range(n))
    assert passed == Rendered(int((~demo_track.valid[:n]).sum()))
    assert count_frames(out) == n
    # The same frames through the same encoder untouched: the reference for "outside the face is unchanged".
    class Untouched:
        name = "identity"

        def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
            return frame

    ref = tmp_path / "ref.mp4"
    render_video(demo_track, mouth, timeline, ref, settings, frames=range(n), renderer=Untouched())
    s = demo_track.summary
    with FrameReader(out, s.width, s.height, n) as rendered, FrameReader(ref, s.width, s.height, n) as source:
        for t in (2, n - 1):
            diff = np.abs(rendered[t].astype(np.int16) - source[t].astype(np.int16)).max(axis=2)
            points = demo_track.landmarks[t]
            feather = WarpRenderer().feather * float(np.ptp(points[L.FACE_OVAL, 1]))
            weight = lower_face_mask(points, (0, 0, s.width, s.height), feather)
            # Outside the feathered lower face at most encoder noise remains; inside, the mouth was re-drawn.
            outside = diff[weight < 1e-3]
            assert outside.mean() < 1.5 and np.percentile(outside, 99) <= 10
            assert diff[weight > 0.99].max() > 20


@pytest.mark.gpu
def test_batched_fp16_cuda_matches_cpu(demo_track, mini_checkpoint: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from lipdub.render.dinet_renderer import DinetRenderer

    cpu = DinetRenderer.for_track(demo_track, mini_checkpoint, "cpu")
    gpu = DinetRenderer.for_track(demo_track, mini_checkpoint, "cuda")
    idx = np.flatnonzero(demo_track.valid)[:8]
    with demo_track.reader() as reader:
        frames = [reader[int(i)] for i in idx]
    points = [demo_track.landmarks[i] for i in idx]
    targets = [DinetRenderer.target_from_opening(p, 0.3) for p in points]
    a = cpu.render_batch(frames, points, targets)
    b = gpu.render_batch(frames, points, targets)
    for x, y in zip(a, b):
        assert np.abs(x.astype(int) - y.astype(int)).mean() < 1.0


@pytest.mark.gpu
def test_render_stage_on_cuda_writes_the_frames_of_the_cpu_path(demo_track, mini_checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    """LIPDUB_DEVICE=cuda: the render stage runs the generator on the GPU (fp16 autocast, BATCH["cuda"] frames a
    call) and writes the frames the CPU path writes, to within fp16's rounding and the encoder's."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.face import landmarks as L
    from lipdub.media.video import FrameReader
    from lipdub.render import make_renderer
    from lipdub.render.dinet_renderer import BATCH, DinetRenderer
    from lipdub.render.paste import lower_face_mask
    from lipdub.render.video import render_video
    from lipdub.render.warp import WarpRenderer
    from lipdub.timeline import Timeline

    n = 40
    mouth = MouthTrack((0.25 + 0.25 * np.sin(np.arange(n) / 3)).astype(np.float32), np.ones(n, bool))
    timeline = Timeline(demo_track.summary.n_frames, n, "bounce")
    outputs = {}
    for device in ("cpu", "cuda"):
        settings = Settings(data_dir=tmp_path / "var", renderer="dinet", dinet_weights=mini_checkpoint,
                            device=device)
        renderer = make_renderer(demo_track, settings, device)
        assert isinstance(renderer, DinetRenderer) and renderer.batch == BATCH[device]
        torch.cuda.reset_peak_memory_stats()
        outputs[device] = tmp_path / f"{device}.mp4"
        render_video(demo_track, mouth, timeline, outputs[device], settings)
        used = torch.cuda.max_memory_allocated()
        assert (used > 0) == (device == "cuda")  # the generator ran on the GPU, and only when asked to
    s = demo_track.summary
    with FrameReader(outputs["cpu"], s.width, s.height, n) as a, FrameReader(outputs["cuda"], s.width, s.height,
                                                                               n) as b:
        for t in range(n):
            diff = np.abs(a[t].astype(np.int16) - b[t].astype(np.int16))
            k = timeline.source_index(t)
            points = demo_track.landmarks[k]
            feather = WarpRenderer().feather * float(np.ptp(points[L.FACE_OVAL, 1]))
            face = lower_face_mask(points, (0, 0, s.width, s.height), feather) > 0.5
            assert diff.mean() < 1.0, t
            assert not demo_track.valid[k] or diff[face].mean() < 4.0, t


def test_packaged_mini_weights_verify_and_load() -> None:
    from lipdub.digest import sha256_file
    from lipdub.render import packaged_weights
    from lipdub.render.dinet import expected_sha256

    path = packaged_weights("mini")
    if not path.is_file():
        pytest.skip("no trained mini weights in this checkout")
    assert path.stat().st_size <= 20 * 1024**2
    assert expected_sha256(path) == sha256_file(path)
    model, extra = load_checkpoint(path)
    assert model.config == CONFIGS["mini"] and int(extra["step"]) > 0


def test_cached_model_is_loaded_once_and_checks_the_hash(mini_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from lipdub.render.dinet_renderer import cached_model

    a = cached_model(mini_checkpoint)
    assert cached_model(mini_checkpoint) is a
    copy = tmp_path / "copy.pt"
    shutil.copy(mini_checkpoint, copy)
    shutil.copy(mini_checkpoint.with_suffix(".pt.sha256"), copy.with_suffix(".pt.sha256"))
    assert cached_model(copy) is not a  # keyed by path too: each file is verified on its own
    with pytest.raises(ChecksumError):
        cached_model(mini_checkpoint, sha256="0" * 64)


def test_render_stage_batches_in_order_and_passes_lip_shapes(demo_track, tmp_path: Path) -> None:
    """A batch renderer sees at most `batch` frames per call, gets the predicted lips, and the written
    video has every frame in order with faceless frames untouched (as the per-frame path writes them)."""
    from lipdub.audio.models import basis
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.media.video import FrameReader
    from lipdub.render.dinet_renderer import DinetRenderer
    from lipdub.render.video import render_video
    from lipdub.timeline import Timeline

    class Stamp:
        """Paints each re-drawn frame's top-left corner with its call number; records what it was given."""

        name, batch = "stamp", 3

        def __init__(self) -> None:
            self.calls: list[int] = []
            self.lips: list[np.ndarray | None] = []

        def target(self, points: np.ndarray, opening: float, lips: np.ndarray | None = None) -> np.ndarray:
            self.lips.append(lips)
            return DinetRenderer.target(points, opening, lips)

        def prepare(self, frames: list[np.ndarray], points: list[np.ndarray],
                    targets: list[np.ndarray]) -> list[np.ndarray]:
            return frames

        def finish(self, frames: list[np.ndarray]) -> list[np.ndarray]:  # runs on the stage's second thread
            self.calls.append(len(frames))
            out = []
            for f in frames:
                f = f.copy()
                f[:16, :16] = 40 * len(self.calls)
                out.append(f)
            return out

    track = demo_track
    n = 10
    valid = track.valid.copy()
    valid[[1, 5, 6]] = False  # faceless frames in the middle of a batch
    track = type(track)(**{**track.__dict__, "valid": valid})
    b = basis()
    lips = np.repeat(b.motion(b.rest[None]), n, 0)
    lips[:, :, 1] += np.linspace(0, 0.1, n)[:, None]  # the whole mouth moves down over time
    mouth = MouthTrack(np.linspace(0, 0.3, n).astype(np.float32), np.ones(n, bool),
                       lips=lips.astype(np.float32), model="teacher")
    r = Stamp()
    timeline = Timeline(track.summary.n_frames, n, "cut_off")
    passed = render_video(track, mouth, timeline, tmp_path / "o.mp4", Settings(data_dir=tmp_path / "var"),
                          frames=range(n), renderer=r)  # type: ignore[arg-type]
    drawn = int(valid[:n].sum())
    assert passed == Rendered(n - drawn) and sum(r.calls) == drawn and max(r.calls) <= 3
    assert all(x is not None and x.shape == (40, 2) for x in r.lips)
    shift = [float((r.lips[k] - r.lips[0])[:, 1].mean()) for k in range(len(r.lips))]
    iod = float(np.median(np.linalg.norm(track.landmarks[:n, 33, :2] - track.landmarks[:n, 263, :2], axis=1)))
    assert shift[-1] > 0.05 * iod and np.all(np.diff(shift) > 0)  # downwards, growing with the motion
    s = track.summary
    with FrameReader(tmp_path / "o.mp4", s.width, s.height, n) as out, track.reader() as src:
        for t in range(n):
            corner = float(out[t][:16, :16].mean())
            if valid[t]:
                assert corner > 30  # stamped
            else:
                assert abs(corner - float(src[t][:16, :16].mean())) < 6  # untouched (encoder noise only)


def test_lip_targets_rest_draws_the_neutral_mouth(demo_track) -> None:
    from lipdub.audio.models import basis
    from lipdub.audio.mouth import MouthTrack
    from lipdub.face import landmarks as L
    from lipdub.render.lips import LipTargets

    b = basis()
    n = 4
    rest = np.repeat(b.motion(b.rest[None]), n, 0).astype(np.float32)
    still = np.zeros(n, np.float32)
    t = demo_track.for_shot(0)  # what the render stage gives it: one shot's view of the track
    targets = LipTargets.for_track(t, MouthTrack(still, np.ones(n, bool), lips=rest))
    assert targets is not None
    assert LipTargets.for_track(t, MouthTrack(still, np.ones(n, bool))) is None
    i = int(np.flatnonzero(demo_track.valid)[0])
    # At rest the target is the speaker's neutral lips under this frame's head pose (what prep measured).
    pose = t.scale[i] * t.neutral_shape[L.LIPS] @ t.rotation[i].T + t.translation[i]
    np.testing.assert_allclose(targets(i, 0), pose[:, :2], atol=1e-3)
    np.testing.assert_allclose(targets(i, None), targets(i, 0), atol=1e-4)


def test_render_batch_equals_frame_by_frame(demo_track, mini_checkpoint: Path) -> None:
    from lipdub.render.dinet_renderer import DinetRenderer

    r = DinetRenderer.for_track(demo_track, mini_checkpoint)
    idx = np.flatnonzero(demo_track.valid)[:3]
    with demo_track.reader() as reader:
        frames = [reader[int(i)] for i in idx]
    points = [demo_track.landmarks[i] for i in idx]
    openings = [0.05, 0.25, 0.45]
    batch = r.render_batch(frames, points, [r.target(p, o) for p, o in zip(points, openings)])
    for f, p, o, b in zip(frames, points, openings, batch):
        single = r(f, p, o)
        assert np.abs(single.astype(int) - b.astype(int)).max() <= 1
        assert np.abs(single.astype(int) - f.astype(int)).max() > 20  # the mouth was re-drawn


def test_lip_detail_lands_on_the_target_lips_only(demo_track) -> None:
    import cv2

    from lipdub.face import landmarks as L
    from lipdub.render import window
    from lipdub.render.detail import LipDetail

    i = int(np.flatnonzero(demo_track.valid)[0])
    points = demo_track.landmarks[i]
    with demo_track.reader() as reader:
        frame = reader[i]
    size, sigma = 96, 2.0
    detail = LipDetail([(frame, points)], size, sigma)
    a = window.window_affine(points, size)
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    # The reference is the frame itself and the target its own lips: the spline is the identity, so adding
    # the detail to the blurred frame must give the frame back on the lips, and change nothing elsewhere.
    soft = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), sigma / scale)
    region = np.clip(soft + 0.5, 0, 255).astype(np.uint8)
    before = region.copy()
    detail.add(region, a, window.apply(a, points[:, :2]))
    lips = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(lips, [points[L.LIPS_OUTER, :2].astype(np.int32)], 1)
    inner = cv2.erode(lips, np.ones((5, 5), np.uint8)).astype(bool)
    err_before = np.abs(before[inner].astype(int) - frame[inner].astype(int)).mean()
    err_after = np.abs(region[inner].astype(int) - frame[inner].astype(int)).mean()
    assert err_after < 0.5 * err_before  # the frame's own lip texture came back where it was
    far = ~cv2.dilate(lips, np.ones((41, 41), np.uint8)).astype(bool)
    assert np.array_equal(region[far], before[far])  # nothing outside the lips moved


def test_enroll_lands_where_dub_finds_it(demo_inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from lipdub.config import Settings
    from lipdub.prep.cache import prepare_cached
    from lipdub.render import ENROLLED, current_enrolment, make_renderer, packaged_weights
    from lipdub.render.dinet_renderer import DinetRenderer

    video = demo_inputs[0]
    data = tmp_path / "var"
    proc = subprocess.run([sys.executable, "-m", "lipdub.cli", "enroll", str(video), "--steps", "2"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "LIPDUB_DATA_DIR": str(data)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = Settings(data_dir=data)
    track = prepare_cached(video, settings)  # the cache entry `lipdub dub` reads (a hit: enroll prepared it)
    assert current_enrolment(track.dir, packaged_weights()) == track.dir / ENROLLED
    used: list[Path] = []
    monkeypatch.setattr(DinetRenderer, "for_track", classmethod(lambda cls, t, w, d="cpu": used.append(w)))
    make_renderer(track, settings)
    assert used == [track.dir / ENROLLED]
    # Fine-tuned from other generic weights, the file is stale and the generic weights are used.
    other = tmp_path / "other.pt"
    other.write_bytes(packaged_weights().read_bytes() + b"\0")
    assert current_enrolment(track.dir, other) is None


def test_render_stage_reports_a_failing_batch_and_leaves_no_file(demo_track, tmp_path: Path) -> None:
    """What goes wrong on the stage's finishing thread surfaces in the caller; no half-written video."""
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.render.dinet_renderer import DinetRenderer
    from lipdub.render.video import render_video
    from lipdub.timeline import Timeline

    class Broken:
        name, batch = "broken", 2

        def __init__(self) -> None:
            self.calls = 0

        def target(self, points: np.ndarray, opening: float, lips: np.ndarray | None = None) -> np.ndarray:
            return DinetRenderer.target(points, opening, lips)

        def prepare(self, frames: list[np.ndarray], points: list[np.ndarray],
                    targets: list[np.ndarray]) -> list[np.ndarray]:
            return frames

        def finish(self, frames: list[np.ndarray]) -> list[np.ndarray]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("generator exploded")
            return frames

    n = 8
    mouth = MouthTrack(np.zeros(n, np.float32), np.ones(n, bool))
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError, match="generator exploded"):
        render_video(demo_track, mouth, Timeline(demo_track.summary.n_frames, n, "cut_off"), out,
                     Settings(data_dir=tmp_path / "var"), frames=range(n), renderer=Broken())  # type: ignore[arg-type]
    assert not out.exists() and not list(tmp_path.glob("o.tmp*"))


def test_each_shot_is_rendered_from_its_own_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a cut the renderer (references, neutral face, rest opening) is that shot's (`for_shot`), and a
    batch never mixes shots."""
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.prep.source import prepare_source
    from lipdub.render import video as render_stage
    from lipdub.render.video import render_video
    from lipdub.timeline import Timeline
    from tests import test_prep_media as M

    settings = Settings(data_dir=tmp_path / "var")
    track = prepare_source(M.cut_to_another_shot(tmp_path / "cut.mp4"), tmp_path / "prep", settings)
    seen: list[tuple[int, int, float]] = []  # (source frame, shot of the renderer, its rest opening)

    class ShotRecorder:
        name, batch = "recorder", 8

        def __init__(self, view: object) -> None:
            refs = view.reference_frames  # type: ignore[attr-defined]
            self.shot = int(track.shot[refs[0]])
            assert (track.shot[refs] == self.shot).all()
            self.rest = view.summary.rest_opening  # type: ignore[attr-defined]

        def target(self, points: np.ndarray, opening: float, lips: np.ndarray | None = None) -> np.ndarray:
            return np.full((478, 2), opening, np.float32)

        def prepare(self, frames: list, points: list, targets: list) -> list:
            return [(self.shot, float(t[0, 0])) for t in targets]

        def finish(self, prepared: list) -> list:
            seen.extend((-1, shot, opening) for shot, opening in prepared)
            assert len({shot for shot, _ in prepared}) <= 1
            return [np.zeros((track.summary.height, track.summary.width, 3), np.uint8) for _ in prepared]

    monkeypatch.setattr(render_stage, "make_renderer", lambda view, settings, device: ShotRecorder(view))
    n = track.summary.n_frames
    mouth = MouthTrack(np.zeros(n, np.float32), np.ones(n, bool))
    render_video(track, mouth, Timeline(n, n, "cut_off"), tmp_path / "o.mp4", settings)
    shots = [shot for _, shot, _ in seen]
    assert shots == sorted(shots) and set(shots) == {0, 1}  # shot 0's frames, then shot 1's
    rest = track.shot_rest_opening
    assert all(abs(opening - rest[shot]) < 1e-5 for _, shot, opening in seen)  # each shot's own rest


def test_a_first_shot_without_a_face_passes_through(tmp_path: Path) -> None:
    """A title card, then a cut to the speaker: the faceless shot has no references to build a renderer
    from, and needs none."""
    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.media.video import count_frames
    from lipdub.prep.source import prepare_source
    from lipdub.render.video import render_video
    from lipdub.timeline import Timeline
    from tests import test_prep_media as M

    settings = Settings(data_dir=tmp_path / "var")
    track = prepare_source(M.title_then_face(tmp_path / "title.mp4"), tmp_path / "prep", settings)
    assert track.summary.cuts == [50] and not track.valid[:50].any() and track.valid[52:].all()
    n = track.summary.n_frames
    mouth = MouthTrack(np.linspace(0, 0.4, n).astype(np.float32), np.ones(n, bool))
    out = tmp_path / "o.mp4"
    passed = render_video(track, mouth, Timeline(n, n, "cut_off"), out, settings, frames=range(40, n))
    assert passed == Rendered(int((~track.valid[40:]).sum())) and count_frames(out) == n - 40
