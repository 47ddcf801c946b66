"""Prep stage: normalisation, face tracks and target choice, quality gate codes, smoothing, cache, preflight.

Generated clips (tests/test_prep_media.py) cover every gate code and edge case; corpus clips (skipped without
the corpus) check real talking and silent faces and a real sustained profile.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_prep_media as M

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.face import landmarks as L
from lipdub.media.probe import packet_times, probe
from lipdub.media.video import FrameReader, count_frames, plan_normalization, source_timeline
from lipdub.prep import gate, speaker
from lipdub.prep.cache import prepare_cached
from lipdub.prep.pose import canonical_face, euler_degrees, fit_pose
from lipdub.prep.preflight import preflight
from lipdub.prep.shots import OTHER_PERSON_DISTANCE
from lipdub.prep.smoothing import frame_jitter, still_jitter
from lipdub.prep.source import prepare_source
from lipdub.prep.track import PREP_VERSION, SourceTrack, prep_version
from lipdub.prep.tracking import Target


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prep_clips")


def prep_error(video: Path, out: Path, settings: Settings, **kw: object) -> InputError:
    with pytest.raises(InputError) as info:
        prepare_source(video, out, settings, **kw)  # type: ignore[arg-type]
    return info.value


# ---- geometry ---------------------------------------------------------------------------------------

def test_canonical_face_is_frontal_and_pose_fit_recovers_a_known_rotation() -> None:
    canon = canonical_face()
    assert canon.shape == (478, 3)
    assert np.allclose(np.linalg.norm(canon[263] - canon[33]), 1.0)
    assert canon[L.NOSE_TIP, 2] < canon[33, 2]  # the nose tip is nearer the camera than the eyes
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("ZYX", [5, 25, -10], degrees=True).as_matrix()  # R = Rz·Ry·Rx.as_matrix()
    points = (180 * canon @ rot.T + [320, 240, 0])[None].astype(np.float32)
    pose = fit_pose(points)
    assert np.allclose(pose.rotation[0], rot, atol=1e-4)
    assert pose.scale[0] == pytest.approx(180, rel=1e-4)
    yaw, pitch, roll = euler_degrees(rot)
    assert (yaw, pitch, roll) == pytest.approx((25, -10, 5), abs=1e-3)


def test_chunked_smoothing_equals_whole_run_smoothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub.prep import smoothing

    rng = np.random.default_rng(3)
    n = 700
    points = (canonical_face() * 150 + [300, 200, 0])[None] + rng.normal(0, 1.5, (n, 478, 3))
    points[:, :, 0] += np.linspace(0, 80, n)[:, None]  # the head moves
    points = points.astype(np.float32)
    valid = np.ones(n, bool)
    valid[400:410] = False  # two runs
    pose = fit_pose(points, valid)
    chunked, _ = smoothing.smooth_landmarks(points, pose, valid)
    monkeypatch.setattr(smoothing, "CHUNK", 10_000)
    whole, _ = smoothing.smooth_landmarks(points, pose, valid)
    assert np.abs(chunked - whole).max() < 1e-3
    assert np.array_equal(chunked[~valid], points[~valid])  # gaps are left alone
    assert frame_jitter(chunked[:400]) < 0.5 * frame_jitter(points[:400])


def test_gate_judges_sustained_turns_but_only_marks_brief_ones() -> None:
    s = Settings()
    n = 100
    present, px = np.ones(n, bool), np.full(n, 150.0)
    brief = np.zeros((n, 3))
    brief[40:50, 0] = 50.0
    flags = gate.frame_flags(present, brief, px, s)
    assert (flags[40:50] == gate.NOT_FRONTAL).all() and (flags[:40] == 0).all()
    assert gate.judge("x", n, present, flags, px, s).ok
    sustained = np.zeros((n, 3))
    sustained[20:, 1] = -40.0  # looking down most of the time
    flags = gate.frame_flags(present, sustained, px, s)
    assert gate.judge("x", n, present, flags, px, s).code == ErrorCode.face_not_frontal


def test_unsupported_rotation_and_timeline_mapping(clips: Path) -> None:
    video = M.sway_face(clips / "plan.mp4", 1.0)
    info = probe(video)
    bad = type(info)(info.path, info.format, info.duration, type(info.video)(**{**info.video.__dict__,
                                                                                 "rotation": 45}), None)
    with pytest.raises(InputError) as err:
        plan_normalization(bad, 2160, 720)
    assert err.value.code == ErrorCode.unsupported_video
    # 30-fps source → 25-fps slots map to the nearest source frame.
    index, times = source_timeline([i / 30 for i in range(60)], 50)
    assert np.abs(times - np.arange(50) / 25).max() <= 1 / 60 + 1e-6
    assert (np.diff(index) >= 1).all()


def test_face_tracker_keeps_ids_through_occlusion() -> None:
    from lipdub.prep.tracking import FaceTracker

    canon = canonical_face().astype(np.float32)

    def face(x: float, y: float, size: float = 100.0) -> np.ndarray:
        return canon * size + np.array([x, y, 0], np.float32)

    tracker = FaceTracker(max_gap=50)
    for i in range(100):
        faces = [face(100 + i * 0.5, 200)]
        if not 30 <= i < 60:  # the right face is hidden for 30 frames (1.2 s) and comes back nearby
            faces.append(face(500 - i * 0.3, 210))
        if i >= 80:
            faces.append(face(900, 600, 60))  # a newcomer elsewhere: a new ID
        tracker.update(i, faces[::-1] if i % 2 else faces)  # detection order must not matter
    tracks = tracker.tracks
    assert len(tracks) == 3
    assert len(tracks[0].frames) == 100 and len(tracks[1].frames) == 70 and len(tracks[2].frames) == 20
    assert np.ptp([b[0] for b in tracks[1].boxes]) < 60  # never swapped with the left face
    # after a gap longer than max_gap the face gets a new ID
    late = FaceTracker(max_gap=10)
    late.update(0, [face(100, 100)])
    late.update(30, [face(100, 100)])
    assert len(late.tracks) == 2


# ---- gate codes on generated clips ----------------------------------------------------------------

def test_no_face(clips: Path, settings: Settings) -> None:
    err = prep_error(M.no_face(clips / "noface.mp4"), clips / "o_noface", settings)
    assert err.code == ErrorCode.no_face and "noface.mp4" in err.message


def test_video_too_short(clips: Path, settings: Settings) -> None:
    err = prep_error(M.sway_face(clips / "short.mp4", 0.32), clips / "o_short", settings)
    assert err.code == ErrorCode.video_too_short


def test_slideshow_is_unsupported(clips: Path, settings: Settings) -> None:
    err = prep_error(M.slideshow(clips / "slides.mp4"), clips / "o_slides", settings)
    assert err.code == ErrorCode.unsupported_video


def test_face_too_small(clips: Path) -> None:
    strict = Settings(min_face_px=400)  # the generated face is ~200 px
    err = prep_error(M.sway_face(clips / "small.mp4", 1.0), clips / "o_small", strict)
    assert err.code == ErrorCode.face_too_small and "400" in err.message


def test_two_equal_faces_need_a_target(clips: Path, settings: Settings) -> None:
    video = M.two_faces(clips / "two.mp4")
    err = prep_error(video, clips / "o_two", settings)
    assert err.code == ErrorCode.multiple_faces
    right = prepare_source(video, clips / "o_two_right", settings, target=Target(time=1.0, point=(360, 128)))
    left = prepare_source(video, clips / "o_two_left", settings,
                          target=Target(time=0.5, box=(20, 28, 220, 228)))
    assert right.summary.target_source == "user" and right.summary.n_faces == 2
    cx_right = right.landmarks[right.valid][:, L.NOSE_TIP, 0]
    cx_left = left.landmarks[left.valid][:, L.NOSE_TIP, 0]
    assert cx_right.min() > 260 and cx_left.max() < 220
    assert right.valid.mean() > 0.9 and left.valid.mean() > 0.9


def test_of_two_equal_faces_the_one_talking_in_the_soundtrack_is_dubbed(clips: Path, settings: Settings,
                                                                        tmp_path: Path) -> None:
    """Two equally prominent heads, each saying its own sentence (dubbed by lipdub itself, so their lips follow
    it): the source's soundtrack decides which one prep dubs. How often this picks right on real faces is
    measured by bench/active_speaker.py."""
    from lipdub.demo import speak

    first = speak("The quick brown fox jumps over the lazy dog, and then it runs away into the dark forest.",
                  tmp_path / "first.wav")
    second = speak("Seven silver ships sailed slowly past the harbour while people on the pier were waving.",
                   tmp_path / "second.wav", voice="en-gb")
    left = M.talking_face(tmp_path / "left.mp4", first, 6.0, tmp_path)
    right = M.talking_face(tmp_path / "right.mp4", second, 6.0, tmp_path)
    for name, audio, side in (("first", first, "left"), ("second", second, "right")):
        track = prepare_source(M.side_by_side(tmp_path / f"{name}.mp4", left, right, audio), tmp_path / f"o_{name}",
                               settings)
        assert track.summary.target_source == "speaker" and "active_speaker_chosen" in track.summary.flags
        nose_x = float(np.median(track.landmarks[track.valid][:, L.NOSE_TIP, 0]))
        assert (nose_x < 256) == (side == "left"), (name, nose_x)
    # A listener who does not talk is not chosen either.
    still = M.side_by_side(tmp_path / "listener.mp4", M.sway_face(tmp_path / "still.mp4", 6.0), right, second)
    track = prepare_source(still, tmp_path / "o_listener", settings)
    assert track.summary.target_source == "speaker" and track.landmarks[track.valid][:, L.NOSE_TIP, 0].min() > 256
    # A larger face in the foreground that does not talk would be the dominant one: the speaker wins.
    foreground = M.side_by_side(tmp_path / "foreground.mp4", M.big_listener(tmp_path / "big.mp4", 6.0), right,
                                second)
    track = prepare_source(foreground, tmp_path / "o_foreground", settings)
    assert track.summary.target_source == "speaker" and track.landmarks[track.valid][:, L.NOSE_TIP, 0].min() > 384
    # Without a soundtrack, or with speech neither face says, the user has to choose.
    mute = prep_error(M.side_by_side(tmp_path / "mute.mp4", left, right, None), tmp_path / "o_mute", settings)
    assert mute.code == ErrorCode.multiple_faces and "no soundtrack" in mute.message
    other = speak("Numbers: one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.",
                  tmp_path / "other.wav", voice="de")
    neither = prep_error(M.side_by_side(tmp_path / "neither.mp4", left, right, other), tmp_path / "o_neither", settings)
    assert neither.code == ErrorCode.multiple_faces and "no face's lips clearly follow" in neither.message


def test_two_faces_taking_turns_are_a_dialogue_not_one_speaker(tmp_path: Path, settings: Settings) -> None:
    """Two heads that talk in turns (the left one first, then the right one, each still while the other
    talks): no single face is chosen. Prep asks for a choice and names the turns; with the left face chosen,
    the summary says where the right one talks (the report's `other_speaker`). How often this finds the
    turns on real faces is measured by bench/active_speaker.py."""
    from lipdub.demo import speak
    from lipdub.jobs import FaceTarget, JobOptions
    from lipdub.media.audio import load_audio, save_wav
    from lipdub.pipeline import dub

    first = load_audio(speak("The quick brown fox jumps over the lazy dog, and then it runs away into the dark "
                             "forest.", tmp_path / "first.wav"))
    second = load_audio(speak("Seven silver ships sailed slowly past the harbour while people on the pier were "
                              "waving.", tmp_path / "second.wav", voice="en-gb"))
    seconds = (len(first) + len(second)) / 16000
    tracks = {}
    for name, samples in (("left", np.concatenate([first, np.zeros_like(second)])),
                          ("right", np.concatenate([np.zeros_like(first), second])),
                          ("both", np.concatenate([first, second]))):
        save_wav(tmp_path / f"{name}.wav", samples)
        tracks[name] = tmp_path / f"{name}.wav"
    left = M.talking_face(tmp_path / "left.mp4", tracks["left"], seconds, tmp_path)
    right = M.talking_face(tmp_path / "right.mp4", tracks["right"], seconds, tmp_path)
    dialogue = M.side_by_side(tmp_path / "dialogue.mp4", left, right, tracks["both"])

    err = prep_error(dialogue, tmp_path / "o_auto", settings)
    assert err.code == ErrorCode.multiple_faces and "take turns" in err.message and "ranges" in err.message, err

    track = prepare_source(dialogue, tmp_path / "o_left", settings, target=Target(time=1.0, point=(128, 128)))
    assert track.summary.target_source == "user"
    switch = len(first) / 16000 * FPS  # the frame where the right face starts talking
    talking = track.summary.other_speaker
    assert talking, "the right face's turn was not found"
    assert all(start >= switch - speaker.TURN_FRAMES / 2 for start, _ in talking), (talking, switch)
    assert sum(end - start for start, end in talking) >= 0.5 * (track.summary.n_frames - switch), talking
    # The dub says where, in seconds of the output (what `--range` and the job's `ranges` take).
    warp = settings.model_copy(update={"renderer": "warp"})
    result = dub(dialogue, tracks["both"], tmp_path / "out.mp4", warp,
                 JobOptions.under(warp, sync_mode="cut_off", target_face=FaceTarget(time=1.0, point=(128, 128))))
    assert result.other_speaker_s and result.other_speaker_s[0][0] == talking[0][0] / FPS, (result, talking)


def test_dominant_face_is_chosen_by_default(clips: Path, settings: Settings) -> None:
    # The right face is as large but only there for the first second: the persistent left face dominates.
    video = M.two_faces(clips / "two_uneven.mp4", seconds=3.0, right_seconds=1.0)
    track = prepare_source(video, clips / "o_uneven", settings)
    assert track.summary.n_faces == 2 and "multiple_faces_dominant_chosen" in track.summary.flags
    assert track.landmarks[track.valid][:, L.NOSE_TIP, 0].max() < 240  # the larger, left face


# ---- tracking, normalisation ----------------------------------------------------------------------

def test_face_leaving_the_frame_keeps_its_track_and_passes_through(clips: Path, settings: Settings) -> None:
    track = prepare_source(M.face_leaves(clips / "leave.mp4"), clips / "o_leave", settings)
    assert track.summary.n_faces == 1  # one ID before and after the 1-s absence
    gone = slice(round(1.6 * 25), round(2.4 * 25))
    assert not track.valid[gone].any() and (track.frame_flags[gone] & gate.NO_FACE).all()
    assert track.valid[:25].all() and track.valid[-20:].all()
    assert "faceless_frames_passed_through" in track.summary.flags
    assert track.summary.face_coverage == pytest.approx(track.present.mean())


def test_brief_turn_marks_frames_pass_through(clips: Path) -> None:
    # A flat face bent round a cylinder reads as ~25-30° of yaw at 65° of bend, so the limit is lowered.
    settings = Settings(max_yaw_deg=18)
    track = prepare_source(M.turned_face(clips / "turn.mp4", 3.0, (1.0, 1.8), 65), clips / "o_turn", settings)
    turned = (track.frame_flags & gate.NOT_FRONTAL) > 0
    assert 3 <= turned.sum() <= 25
    assert np.flatnonzero(turned).min() >= 24 and np.flatnonzero(turned).max() <= 48
    assert not track.valid[turned].any() and track.valid[:20].all() and track.valid[-20:].all()
    assert "brief_turns_passed_through" in track.summary.flags
    assert track.summary.yaw["max_abs"] > 18


def test_rotated_phone_video_is_upright(clips: Path, settings: Settings) -> None:
    upright = M.sway_face(clips / "upright.mp4", 1.2)
    phone = M.rotated_phone(upright, clips / "phone.mp4", 90)
    assert probe(phone).video.rotation in (90, 270)
    track = prepare_source(phone, clips / "o_phone", settings)
    assert "rotation" in track.summary.normalization
    assert track.valid.mean() > 0.9
    eyes = track.landmarks[track.valid][:, [33, 263]]
    tilt = np.abs(eyes[:, 1, 1] - eyes[:, 0, 1]) / np.abs(eyes[:, 1, 0] - eyes[:, 0, 0])
    assert np.median(tilt) < 0.1 and tilt.max() < 0.3  # eyes level: the face is upright, not on its side
    with track.reader() as reader:
        assert reader[0].shape == (256, 256, 3)


def test_vfr_and_odd_sizes_are_normalised(clips: Path, settings: Settings) -> None:
    vfr = M.variable_rate(M.sway_face(clips / "cfr.mp4", 3.2), clips / "vfr.mp4")
    info = probe(vfr)
    assert info.video is not None and info.video.variable_frame_rate
    track = prepare_source(vfr, clips / "o_vfr", settings)
    assert {"vfr", "fps"} <= set(track.summary.normalization)
    duration = packet_times(vfr).pts[-1]
    assert abs(track.summary.n_frames - duration * 25) <= 2
    assert np.all(np.diff(track.source_time) >= 0)
    assert np.abs(track.source_time - np.arange(track.summary.n_frames) / 25).max() < 0.05
    # The normalised source keeps the source's own rate, for the output: a VFR source at a constant rate, its
    # average (21 fps: no standard rate is within 1 %); prep analysed 25 frames a second of it.
    assert track.summary.native_rate == "21" and track.video.name == "native.mp4"
    assert track.summary.native_frames == count_frames(track.video) and not (track.dir / "video.mp4").exists()
    assert abs(track.summary.native_frames - duration * 21) <= 2
    assert probe(track.video).video.fps == pytest.approx(21)
    with track.reader() as frames:  # the 25-fps frames the landmarks describe, picked from native.mp4
        assert frames.n_frames == track.summary.n_frames and frames[track.summary.n_frames - 1].shape == (256, 256, 3)
    cfr = prepare_source(clips / "cfr.mp4", clips / "o_cfr", settings)  # at 25 fps already
    assert cfr.summary.native_rate is None and cfr.video.name == "video.mp4"
    assert count_frames(cfr.video) == cfr.summary.n_frames
    # odd size: 255×201 → even
    odd = M.write_clip(clips / "odd.mkv", 20, 256, 202, lambda i: M.canvas(256, 202))
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(odd), "-vf", "format=yuv444p,crop=255:201:0:0", "-c:v", "libx264",
                    "-pix_fmt", "yuv444p", str(clips / "odd.mp4")], check=True)
    plan = plan_normalization(probe(clips / "odd.mp4"), 2160, 720)
    assert plan.width % 2 == 0 and plan.height % 2 == 0 and "odd_size" in plan.changes


def test_the_native_rate_is_the_standard_rate_near_the_source_s() -> None:
    from lipdub.media.video import native_rate

    assert [native_rate(f) for f in (23.976, 24.0, 25.02, 29.97, 29.5, 30.0, 59.94, 119.88, 15.0, 12.4)] == \
        ["24000/1001", "24", "25", "30000/1001", "30", "30", "60000/1001", "60", "15", "12"]


# ---- smoothing, track contents, cache, preflight ----------------------------------------------------

def test_still_head_jitter_is_removed(clips: Path, settings: Settings) -> None:
    from lipdub.prep.analysis import analyze_faces
    from lipdub.prep.preflight import sample_frames

    video = M.still_face(clips / "still.mp4", 3.0, noise=6.0)
    raw_faces = analyze_faces(sample_frames(video, 256, 256, 10), 256, 256, 50)
    raw = np.stack(raw_faces.tracker.tracks[0].landmarks)
    track = prepare_source(video, clips / "o_still", settings)
    before, after = still_jitter(raw), still_jitter(track.landmarks)
    assert after < 0.6 * before, (before, after)
    assert frame_jitter(track.landmarks) < 0.5 * frame_jitter(raw)


def test_cut_detection_finds_isolated_spikes_not_fast_motion() -> None:
    from lipdub.prep.shots import find_cuts, shot_ids

    calm = np.full(40, 0.01)
    calm[0] = 0.0
    cut = calm.copy()
    cut[17] = 0.08  # one frame unlike the one before it: a cut
    fast = np.full(40, 0.08)  # every frame moves a lot (a whip pan, a fast head turn): no cut
    fast[0] = 0.0
    small = calm.copy()
    small[17] = 0.03  # a spike, but a small change (a flash of light on part of the frame)
    assert find_cuts(cut) == [17] and find_cuts(fast) == [] and find_cuts(small) == []
    assert shot_ids([17], 40, min_frames=10).tolist() == [0] * 17 + [1] * 23
    # A cut leaving a piece under min_frames is no shot boundary.
    assert shot_ids([17, 20], 40, min_frames=10).tolist() == [0] * 17 + [1] * 23
    assert shot_ids([5, 17], 40, min_frames=10).tolist() == [0] * 17 + [1] * 23
    assert shot_ids([35], 40, min_frames=10).tolist() == [0] * 40


def test_a_cut_starts_a_shot_with_its_own_references_and_no_smoothing_across(clips: Path,
                                                                            settings: Settings) -> None:
    track = prepare_source(M.cut_to_another_shot(clips / "cut.mp4"), clips / "o_cut", settings)
    assert track.summary.cuts == [50], track.summary.cuts
    assert track.shot is not None and track.shot[:50].max() == 0 and track.shot[50:].min() == 1
    assert set(track.shot[track.reference_frames].tolist()) == {0, 1}  # each shot has its own references
    assert track.neutral_shape.shape == (2, 478, 3) and track.shot_rest_opening.shape == (2,)
    # The same head, mirrored and recoloured: another camera, the same person.
    distances = track.summary.shot_person_distance
    assert distances[0] == 0.0 and 0 < distances[1] < OTHER_PERSON_DISTANCE, distances
    view = track.for_shot(1)
    assert not view.valid[:50].any() and view.valid[50:].any()
    assert (view.reference_frames >= 50).all() and view.neutral_shape.shape == (478, 3)
    # The head jumps about 25 px at the cut. Smoothing across it would spread the jump over the frames
    # around it; within a shot the head moves under a pixel a frame.
    nose = track.landmarks[:, L.NOSE_TIP, :2]
    step = np.linalg.norm(np.diff(nose, axis=0), axis=1)  # step[i]: frame i -> i + 1
    assert step[49] > 15, step[45:55]
    assert step[44:49].max() < 2 and step[50:55].max() < 2, step[44:56]


def test_a_shot_of_a_face_of_other_proportions_is_reported_as_another_person(clips: Path,
                                                                              settings: Settings) -> None:
    from lipdub.prep.shots import shot_spans

    track = prepare_source(M.cut_to_another_face(clips / "other.mp4"), clips / "o_other", settings)
    s = track.summary
    assert s.cuts == [50] and s.shot_person_distance[1] > OTHER_PERSON_DISTANCE, s.shot_person_distance
    shots = shot_spans(s.cuts, s.n_frames, s.shot_person_distance)
    assert [(x.start, x.end, x.other_person) for x in shots] == [(0, 50, False), (50, 100, True)]
    assert track.valid[52:].all()  # reported, not left out: that is the user's call (`ranges`)


def test_after_a_cut_the_main_face_continues_the_track_wherever_it_is(clips: Path, settings: Settings) -> None:
    """Edited video: the speaker of the next shot may stand anywhere. Not one face track per shot (half the
    video passed through, or a multiple_faces refusal) but the main face of every shot, each with its own
    references."""
    track = prepare_source(M.cut_to_another_shot(clips / "far.mp4", far=True), clips / "o_far", settings)
    assert track.summary.cuts == [50] and track.summary.n_faces == 1
    assert track.present.all() and track.valid[:48].all() and track.valid[52:].all()
    assert track.landmarks[49, L.NOSE_TIP, 0] < 200 < track.landmarks[50, L.NOSE_TIP, 0]
    assert set(track.shot[track.reference_frames].tolist()) == {0, 1}


def test_track_contents_and_round_trip(clips: Path, settings: Settings) -> None:
    track = prepare_source(M.sway_face(clips / "sway.mp4", 2.0), clips / "o_sway", settings)
    n = track.summary.n_frames
    assert n == 50 and track.summary.version == PREP_VERSION
    assert track.landmarks.shape == (n, 478, 3) and track.rotation.shape == (n, 3, 3)
    assert track.crop.shape == (n, 4) and track.mouth_opening.shape == (n,)
    # the crop box contains the whole face oval in every frame
    oval = track.landmarks[:, L.FACE_OVAL, :2]
    assert (oval.min(1) >= track.crop[:, :2] - 1).all() and (oval.max(1) <= track.crop[:, 2:] + 1).all()
    refs = track.reference_frames
    assert len(set(refs.tolist())) == len(refs) >= 3
    assert (track.mouth_opening[refs] >= np.median(track.mouth_opening[track.valid]) - 1e-6).all()
    assert track.summary.cuts == [] and (track.shot == 0).all()  # one shot
    assert track.neutral_shape.shape == (1, 478, 3) and track.for_shot(0).neutral_shape.shape == (478, 3)
    loaded = SourceTrack.load(track.dir)
    assert np.array_equal(loaded.landmarks, track.landmarks) and loaded.summary == track.summary
    data = json.loads((track.dir / "track.json").read_text())
    assert data["version"] == PREP_VERSION and set(data["yaw"]) == {"p5", "p50", "p95", "max_abs"}


def test_cache_reuses_tracks_and_rejections(clips: Path, settings: Settings) -> None:
    video = M.sway_face(clips / "cached.mp4", 1.2)
    first = prepare_cached(video, settings)
    assert first.dir.parent == settings.data_dir / "prep" and first.dir.name.endswith(f"-v{prep_version(settings)}")
    copy = clips / "cached_copy.mp4"
    copy.write_bytes(video.read_bytes())  # same bytes, another name: same entry
    start = time.perf_counter()
    second = prepare_cached(copy, settings)
    assert time.perf_counter() - start < 1.0
    assert second.dir == first.dir and np.array_equal(second.landmarks, first.landmarks)
    targeted = prepare_cached(video, settings, target=Target(0.5, point=(128, 128)))
    assert targeted.dir != first.dir
    bad = M.no_face(clips / "cached_noface.mp4", 1.0)
    for _ in range(2):
        with pytest.raises(InputError) as err:
            prepare_cached(bad, settings)
        assert err.value.code == ErrorCode.no_face
    assert not list((settings.data_dir / "prep").glob(".tmp-*"))


def test_a_cached_rejection_follows_the_settings_and_names_the_file_given(clips: Path, settings: Settings) -> None:
    """The gate's message tells users which setting to change: a changed setting must judge the source again
    (the cache entry is per prep settings), and a copy under another name is named as given."""
    video = M.face_leaves(clips / "leaves.mp4", 3.0, (1.2, 2.0))  # the face is away for about a third
    strict = settings.model_copy(update={"min_face_coverage": 0.9})
    for name in ("leaves.mp4", "renamed.mp4"):
        copy = clips / name
        if copy != video:
            copy.write_bytes(video.read_bytes())
        with pytest.raises(InputError) as err:
            prepare_cached(copy, strict)
        assert err.value.code == ErrorCode.no_face and err.value.message.startswith(f"{name}: a face was found")
    track = prepare_cached(video, settings)  # the default coverage (50 %) passes it
    assert 0.5 <= track.summary.face_coverage < 0.9
    assert prep_version(strict) != prep_version(settings)


def test_cache_evicts_least_recently_used_entries(tmp_path: Path) -> None:
    import os

    from lipdub.prep.cache import IN_USE_S, evict, mark_used

    now = time.time()
    ages = {"old": 3 * IN_USE_S, "older": 4 * IN_USE_S, "mid": 2 * IN_USE_S, "busy": 10.0}
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "video.mp4").write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / ".tmp-running").mkdir()
    (tmp_path / ".tmp-running" / "video.mp4").write_bytes(b"x" * 5000)
    mark_used(tmp_path / "older")  # a cache hit makes it the most recent
    assert evict(tmp_path, 4000, now) == []
    assert [p.name for p in evict(tmp_path, 2500, now)] == ["old", "mid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-running", "busy", "older"]
    assert evict(tmp_path, 0, now + 2 * IN_USE_S) == [tmp_path / "busy", tmp_path / "older"]
    assert evict(tmp_path / "missing", 0) == []


def test_face_choice_is_part_of_the_source_key() -> None:
    from lipdub.jobs import InputRef, JobOptions
    from lipdub.prep.cache import source_key
    from lipdub.service.manifest import Item

    sha = "ab" * 32
    assert Target.from_option("auto") is None and Target.from_option(None) is None
    point = Target.from_option({"time": 1.0, "point": [360, 128], "box": None})
    assert point == Target(1.0, point=(360.0, 128.0))
    box = Target.from_option({"time": 0.5, "box": [20, 28, 220, 228]})
    assert box == Target(0.5, box=(20.0, 28.0, 220.0, 228.0))
    keys = {source_key(sha), source_key(sha, point), source_key(sha, box)}
    assert len(keys) == 3 and source_key(sha) == sha and all(k.startswith(sha) for k in keys)
    assert source_key(sha, point) == source_key(sha, Target.from_option({"time": 1, "point": [360.0, 128]}))
    item = Item(1, "a", InputRef(sha256=sha), InputRef(),
                JobOptions.model_validate({"target_face": {"time": 1.0, "point": [360, 128]}}), {})
    assert item.source == source_key(sha, point)
    with pytest.raises(ValueError):
        Target.from_option("left")


def test_preflight_predicts_the_verdict(clips: Path, settings: Settings) -> None:
    ok = preflight(M.sway_face(clips / "pf.mp4", 6.0), settings, seconds=2.0)
    assert ok.verdict.ok and ok.summary is not None and ok.summary.face_coverage > 0.9
    assert ok.sampled_seconds == pytest.approx(2.0, abs=0.1) and ok.duration == pytest.approx(6.0, abs=0.1)
    bad = preflight(M.no_face(clips / "pf_noface.mp4", 3.0), settings, seconds=2.0)
    assert bad.verdict.code == ErrorCode.no_face
    two = preflight(M.two_faces(clips / "pf_two.mp4"), settings, seconds=1.0)
    assert two.verdict.code == ErrorCode.multiple_faces
    assert json.dumps(two.as_dict())


# ---- real clips ----------------------------------------------------------------------------------

TALKING = "talking/rizkiarm_LipNet__lbax4n.mpg"  # GRID, 3 s, 360×288, talking
SILENT = "silent/ali-vilab_dreamtalk__W009_front_neutral_level1_001.mp4"  # MEAD, 4 s, 256², silent
PROFILE = "talking/Hangz-nju-cuhk_Talking-Face_PC-AVS__Input-00002.mp4"  # ~40° yaw throughout


@pytest.mark.corpus
@pytest.mark.parametrize("clip", [TALKING, SILENT])
def test_corpus_clips_prep_cleanly(corpus: Path, clip: str, tmp_path: Path, settings: Settings) -> None:
    track = prepare_source(corpus / clip, tmp_path / "prep", settings)
    assert track.summary.face_coverage > 0.95 and track.valid.mean() > 0.9
    assert abs(track.summary.yaw["p50"]) < 20
    with FrameReader(track.video, track.summary.width, track.summary.height, track.summary.n_frames) as r:
        assert r[track.summary.n_frames - 1].shape == (track.summary.height, track.summary.width, 3)
    if clip == TALKING:
        # smoothing keeps the mouth: raw and smoothed openings agree and the peaks survive
        from lipdub.prep.analysis import analyze_faces
        from lipdub.prep.preflight import sample_frames

        s = track.summary
        raw_faces = analyze_faces(sample_frames(corpus / clip, s.width, s.height, 10), s.width, s.height, 50)
        raw = np.stack(raw_faces.tracker.tracks[0].landmarks)[: s.n_frames]
        raw_open, smooth_open = L.mouth_opening(raw), track.mouth_opening[: len(raw)]
        assert np.corrcoef(raw_open, smooth_open)[0, 1] > 0.95
        assert smooth_open.max() > 0.85 * raw_open.max()
        assert track.mouth_opening[track.reference_frames].min() >= np.median(track.mouth_opening)


@pytest.mark.corpus
def test_corpus_profile_is_not_frontal(corpus: Path, tmp_path: Path, settings: Settings) -> None:
    err = prep_error(corpus / PROFILE, tmp_path / "prep", settings)
    assert err.code == ErrorCode.face_not_frontal
    # the yaw estimate itself: this speaker faces ~35-40° away throughout
    track = prepare_source(corpus / PROFILE, tmp_path / "prep2", Settings(max_yaw_deg=89))
    assert 28 < abs(track.summary.yaw["p50"]) < 50 and track.valid.all()
