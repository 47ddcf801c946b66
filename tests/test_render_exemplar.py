"""The exemplar renderer (issue 32) on generated faces: the canonical face mesh drawn as a flat, textured face
with lips whose opening changes frame to frame. No corpus footage: what is checked is the renderer's logic
(path, library, colour match, where it draws), not how real its mouths look (that is `lipdub eval`'s job)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lipdub.audio.mouth import MouthTrack
from lipdub.config import Settings
from lipdub.face import landmarks as L
from lipdub.media.video import VideoWriter
from lipdub.prep.pose import canonical_face
from lipdub.prep.track import VIDEO, SourceTrack, TrackSummary
from lipdub.render import make_renderer, paste
from lipdub.render.exemplar import (
    RUN,
    ExemplarRenderer,
    MouthLibrary,
    describe,
    folds,
    local_gain,
    mouth_region,
    select_path,
    skin_around,
    two_band,
)
from lipdub.render.protocols import BatchRenderer
from lipdub.render.video import render_video
from lipdub.render.warp import target_from_opening
from lipdub.timeline import Timeline

SIZE = 192  # frame side, px
SCALE = 64.0  # px per canonical unit (inter-ocular distance): a face about 120 px tall
SKIN = (205.0, 160.0, 135.0)
LIPS = (170.0, 75.0, 85.0)
CAVITY = (45.0, 15.0, 20.0)


def face_points(opening: float) -> np.ndarray:
    """[478, 3] landmarks of the generated face in frame px, lips and jaw moved to `opening`."""
    c = canonical_face()
    points = np.zeros((478, 3), np.float32)
    points[:, :2] = c[:, :2] * SCALE + (SIZE / 2, SIZE / 2 - 20)
    points[:, :2] = target_from_opening(points, opening)
    return points


def draw(points: np.ndarray, light: float = 1.0) -> np.ndarray:
    """RGB uint8 frame: a fixed noise texture (so skin has detail), the face oval, lips and mouth cavity."""
    rng = np.random.default_rng(7)
    texture = cv2.GaussianBlur(rng.normal(0.0, 1.0, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.2) * 25.0
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = (60.0, 90.0, 120.0)
    xy = points[:, :2].astype(np.int32)
    for idx, colour in ((L.FACE_OVAL, SKIN), (L.LIPS_OUTER, LIPS), (L.LIPS_INNER, CAVITY)):
        cv2.fillPoly(img, [xy[idx]], colour)
    img += texture[..., None]
    return np.clip(img * light, 0, 255).astype(np.uint8)


OPENINGS = 0.05 + 0.2 * (1 + np.sin(np.arange(40) / 3.0))  # a talking mouth: 0.05 .. 0.45


def make_track(tmp_path: Path, valid: np.ndarray | None = None) -> tuple[SourceTrack, list[np.ndarray]]:
    """A prepared-source track of the generated face talking (video.mp4 encoded as prep would)."""
    points = np.stack([face_points(float(o)) for o in OPENINGS])
    frames = [draw(p) for p in points]
    with VideoWriter(tmp_path / VIDEO, SIZE, SIZE) as writer:
        for f in frames:
            writer.write(f)
    n = len(frames)
    face_px = float(np.ptp(points[0, L.FACE_OVAL, 1]))
    summary = TrackSummary(version=1, width=SIZE, height=SIZE, n_frames=n, fps=25, face_coverage=1.0,
                           face_px=face_px, rest_opening=0.05)
    return SourceTrack(tmp_path, summary, points, np.ones(n, bool) if valid is None else valid), frames


def jumps(path: np.ndarray, prev: np.ndarray) -> int:
    """Steps of a path that neither go on to the next source frame nor stay."""
    return sum(int(b != a and prev[b] != a) for a, b in zip(path[:-1], path[1:], strict=True))


def runs_of(lengths: list[int]) -> np.ndarray:
    """`prev` of a library made of runs of consecutive source frames."""
    prev: list[int] = []
    for n in lengths:
        start = len(prev)
        prev += [-1] + list(range(start, start + n - 1))
    return np.array(prev, np.int64)


def test_path_prefers_consecutive_frames() -> None:
    prev = runs_of([12])
    unary = np.random.default_rng(0).uniform(0.0, 0.1, (8, 12))  # near-equal matches everywhere
    path = select_path(unary, prev)
    assert jumps(path, prev) == 0
    assert (np.diff(path) == 1).all()  # no holds either: the next source frame is free
    # Planted: picking the best match per frame alone (no transition cost) jumps around; `jumps` sees it.
    assert jumps(unary.argmin(1), prev) > 0


def test_path_follows_a_changing_target_with_one_jump() -> None:
    prev = runs_of([6, 6])  # entries 0-5 and 6-11: two runs of source frames
    unary = np.full((8, 12), 5.0)
    unary[:4, :6] = 0.0  # the target first looks like run A ...
    unary[4:, 6:] = 0.0  # ... then like run B
    path = select_path(unary, prev)
    assert (path[:4] < 6).all() and (path[4:] >= 6).all()
    assert jumps(path, prev) == 1


def test_path_continues_from_the_previous_batch() -> None:
    prev = runs_of([10])
    path = select_path(np.zeros((3, 10)), prev, start=3)
    assert path.tolist() == [4, 5, 6]


def test_library_never_holds_excluded_frames(tmp_path: Path) -> None:
    valid = np.ones(len(OPENINGS), bool)
    valid[5:9] = False  # faceless frames
    valid[30:] = False  # another shot (`SourceTrack.for_shot` marks it invalid)
    track, frames = make_track(tmp_path, valid)
    library = ExemplarRenderer.for_track(track).library
    assert set(library.frames.tolist()) == set(np.flatnonzero(valid).tolist())
    assert library.prev[library.frames.tolist().index(9)] == -1  # frame 8 is not in: 9 starts a run
    # The crops are of the frames they say (the encoder's loss aside).
    k = library.frames.tolist().index(12)
    x0, y0 = library.origins[k]
    h, w = library.crops[k].shape[:2]
    real = frames[12][y0:y0 + h, x0:x0 + w].astype(np.float32)
    assert np.abs(library.crops[k].astype(np.float32) - real).mean() < 4.0
    # A long shot is thinned to runs of RUN valid frames (here room for one run: the first).
    kept = MouthLibrary.pick(valid, crop_bytes=1.0, budget=RUN)
    assert kept.tolist() == np.flatnonzero(valid)[:RUN].tolist()


def test_no_usable_frame_is_an_error(tmp_path: Path) -> None:
    track, _ = make_track(tmp_path, np.zeros(len(OPENINGS), bool))
    with pytest.raises(ValueError, match="no usable face"):
        ExemplarRenderer.for_track(track)


def test_colour_match_undoes_a_global_light_change() -> None:
    points = face_points(0.3)
    frame = draw(points)
    mouth = draw(points, light=0.8)  # the same mouth filmed in dimmer light
    face_px = float(np.ptp(points[L.FACE_OVAL, 1]))
    work = paste.lower_face_bounds(points, 0.08 * face_px)
    x0, y0, x1, y1 = work
    skin = skin_around(points[:, :2], points[:, :2], work, face_px)
    crop = (slice(y0, y1), slice(x0, x1))
    gain = local_gain(mouth[crop], frame[crop], skin, 0.25 * float(L.inter_ocular(points)))
    corrected = mouth[crop].astype(np.float32) * gain
    face = paste.lower_face_mask(points, work, 0.08 * face_px) > 0.99
    before = np.abs(mouth[crop].astype(np.float32) - frame[crop])[face].mean()
    after = np.abs(corrected - frame[crop])[face].mean()
    assert before > 20.0  # the planted change is large ...
    assert after < 3.0  # ... and undone, lips included (their gain comes from the skin around them)


def test_colour_match_keeps_the_chosen_lips_own_colour() -> None:
    """The gain is the skin's: lips of another colour in the chosen frame are not repainted to the frame's."""
    points = face_points(0.3)
    frame = draw(points)
    mouth = frame.copy()
    lips = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(lips, [points[L.LIPS_OUTER, :2].astype(np.int32)], 1)
    cv2.fillPoly(lips, [points[L.LIPS_INNER, :2].astype(np.int32)], 0)
    lips = cv2.erode(lips, np.ones((3, 3), np.uint8)).astype(bool)
    mouth[lips] = (120, 60, 150)  # planted: other lips than the frame's
    face_px = float(np.ptp(points[L.FACE_OVAL, 1]))
    work = paste.lower_face_bounds(points, 0.08 * face_px)
    x0, y0, x1, y1 = work
    crop = (slice(y0, y1), slice(x0, x1))
    gain = local_gain(mouth[crop], frame[crop], skin_around(points[:, :2], points[:, :2], work, face_px),
                      0.25 * float(L.inter_ocular(points)))
    corrected = mouth[crop].astype(np.float32) * gain
    assert np.abs(gain - 1.0).max() < 0.05  # same light: nothing to undo
    assert np.abs(corrected[lips[crop]] - frame[crop][lips[crop]]).mean() > 30.0


def changed_outside(out: np.ndarray, frame: np.ndarray, allowed: np.ndarray) -> int:
    """Pixels that differ between two frames where the renderer may not draw."""
    return int((np.abs(out.astype(np.int16) - frame).max(-1) > 0)[~allowed].sum())


def test_renderer_draws_only_inside_the_lower_face(tmp_path: Path) -> None:
    track, _ = make_track(tmp_path)
    renderer = make_renderer(track, Settings(renderer="exemplar", data_dir=tmp_path / "var"))
    assert isinstance(renderer, ExemplarRenderer) and isinstance(renderer, BatchRenderer)
    points = face_points(0.05)  # a closed mouth in the frame ...
    frame = draw(points)
    target = renderer.target(points, 0.4)  # ... opened by the audio
    [out] = renderer.finish(renderer.prepare([frame], [points], [target]))
    face_px = float(np.ptp(points[L.FACE_OVAL, 1]))
    allowed = np.zeros((SIZE, SIZE), np.float32)
    for p in (points, target):  # the lower face of the frame and of the moved jaw, feathered
        allowed = np.maximum(allowed, paste.lower_face_mask(p, (0, 0, SIZE, SIZE), 0.08 * face_px))
    allowed_px = cv2.dilate((allowed > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert changed_outside(out, frame, allowed_px) == 0
    # Planted: a renderer that touches the background is caught by the same check.
    bad = out.copy()
    bad[2, 2] += 1
    assert changed_outside(bad, frame, allowed_px) == 1
    # It did draw: the mouth is open now (a closed mouth's cavity pixels are lip/skin, not dark).
    inner = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(inner, [target[L.LIPS_INNER].astype(np.int32)], 1)
    inner = cv2.erode(inner, np.ones((3, 3), np.uint8)).astype(bool)
    assert out[inner].mean() < 0.6 * frame[inner].mean()


def test_chosen_mouths_follow_the_target_shape(tmp_path: Path) -> None:
    track, _ = make_track(tmp_path)
    renderer = ExemplarRenderer.for_track(track, batch=8)
    lib = renderer.library
    points = face_points(0.05)
    wanted = [0.1, 0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.15] * 2
    targets = [renderer.target(points, o) for o in wanted]
    chosen = np.concatenate([renderer.choose([points] * 8, targets[i:i + 8]) for i in (0, 8)])
    got = OPENINGS[lib.frames[chosen]]
    assert np.abs(got - np.array(wanted)).max() < 0.08
    # Lip shapes of the chosen entries (in the library's frame) against the targets': closer than the frame's.
    lips_t, _ = describe(np.stack([points] * 16), np.stack([t[L.LIPS] for t in targets]), lib.reference)
    assert np.linalg.norm(lib.lips[chosen] - lips_t, axis=-1).mean() < 2.0
    stats = renderer.stats()
    assert stats["chosen_vs_own_lip_distance"] < 0.5


def test_mouths_the_source_never_shows_are_counted_for_the_report(tmp_path: Path) -> None:
    """A source whose mouth never opens, asked for wide openings: the render stage says how many frames it
    drew without a mouth of that shape (the job report's frames_without_matching_mouth); shapes it has
    count nothing."""
    track, _ = make_track(tmp_path, valid=OPENINGS < 0.1)
    n = len(OPENINGS)
    settings = Settings(data_dir=tmp_path / "var", renderer="exemplar")
    rest = track.summary.rest_opening
    for opening, unmatched in ((0.02, False), (0.4, True)):
        mouth = MouthTrack(np.full(n, opening, np.float32), np.ones(n, bool))
        renderer = make_renderer(track, settings)
        made = render_video(track, mouth, Timeline(n, n, "cut_off"), tmp_path / "o.mp4", settings,
                            renderer=renderer)
        drawn = int(track.valid.sum())
        assert made.passed_through == n - drawn
        assert (made.unmatched == drawn) if unmatched else (made.unmatched == 0), (rest + opening, made)


def test_a_folded_map_is_found_only_where_the_mouth_goes() -> None:
    """`folds` finds a backward map that turns over on itself (negative area) inside the region, not a
    squeeze (a closing mouth's cavity shrinks to a line) nor a fold outside the region."""
    step = 4.0
    gy, gx = np.mgrid[0:12, 0:12].astype(np.float32) * step
    grid = np.stack([gx, gy], -1)
    inside = np.zeros((12, 12), bool)
    inside[2:8, 2:8] = True
    assert not folds(grid, step, inside)
    squeezed = grid.copy()
    squeezed[4:6, :, 1] = squeezed[4, 0, 1]  # rows 4-5 map onto one source row: zero area, not a fold
    assert not folds(squeezed, step, inside)
    folded = grid.copy()
    folded[5, :, 1] = grid[3, :, 1]  # row 5 maps above row 4: the map turns over
    assert folds(folded, step, inside)
    outside = grid.copy()
    outside[10, :, 1] = grid[8, :, 1]
    assert not folds(outside, step, inside)


def test_two_band_switches_detail_instead_of_averaging_it() -> None:
    """Where the feather mixes two unrelated textures, a plain blend averages them (a blur: half the
    Laplacian variance at equal weights); `two_band` keeps one texture's detail whole, and it is exactly the
    base where the weight is 0 and the top where it is 1."""
    rng = np.random.default_rng(3)
    top, base = (rng.normal(128.0, 20.0, (64, 64, 3)).astype(np.float32) for _ in range(2))
    weight = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    out = two_band(top, base, weight, 1.5)
    plain = base + (top - base) * weight[..., None]
    assert np.allclose(out[:, 0], base[:, 0], atol=1e-3) and np.allclose(out[:, -1], top[:, -1], atol=1e-3)

    def detail(img: np.ndarray) -> float:  # over the feather's middle (weights 0.2-0.8)
        return float(cv2.Laplacian(img[:, 13:51, 0], cv2.CV_32F)[2:-2, 2:-2].var())

    assert detail(out) > 0.75 * detail(top) > 1.4 * detail(plain)


def test_mouth_region_holds_the_lips_and_not_the_chin() -> None:
    points = face_points(0.3)
    box = (0, 0, SIZE, SIZE)
    region = mouth_region(points[:, :2], points[:, :2], box, 0.35)
    lips = points[L.LIPS_OUTER, :2].mean(0).astype(int)
    chin = points[152, :2].astype(int)
    assert region[lips[1], lips[0]] > 0.95
    assert region[min(chin[1], SIZE - 1), chin[0]] < 0.05
