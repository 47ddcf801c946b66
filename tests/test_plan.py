"""lipdub.plan: the output rate, timeline and chunks of a dub, and its report, as both paths work them out."""

from __future__ import annotations

import json

import pytest

from lipdub.config import Settings
from lipdub.jobs import JobOptions
from lipdub.plan import plan, planned, render_chunks, report
from lipdub.prep.track import TrackSummary


def summary(n_frames: int = 100, native_rate: str | None = None, native_frames: int = 0, **extra: object) -> TrackSummary:
    return TrackSummary(version=7, width=256, height=256, n_frames=n_frames, fps=25, face_coverage=0.96,
                        face_px=140.0, rest_opening=0.1, native_rate=native_rate, native_frames=native_frames,
                        **extra)  # type: ignore[arg-type]


def options(**given: object) -> JobOptions:
    return JobOptions.under(Settings(), **given)


def test_render_chunks_cover_the_output_once() -> None:
    assert render_chunks(25, 10) == [range(0, 10), range(10, 20), range(20, 25)]
    assert render_chunks(20, 10) == [range(0, 10), range(10, 20)]
    assert render_chunks(0, 10) == []


def test_the_source_rate_is_kept_unless_the_options_ask_for_25() -> None:
    source = summary(n_frames=100, native_rate="30", native_frames=120)  # 4 s at 30 fps
    kept = plan(options(sync_mode="cut_off"), source, mouth_frames=250, chunk_seconds=1.0)
    assert (kept.rate, kept.n_frames, kept.chunk_frames, len(kept.chunks)) == ("30", 120, 30, 4)
    retimed = plan(options(sync_mode="cut_off", frame_rate="25"), source, mouth_frames=250, chunk_seconds=1.0)
    assert (retimed.rate, retimed.n_frames, retimed.chunk_frames) == ("25", 100, 25)
    # bounce: the audio's 10 s at the output's rate
    assert plan(options(sync_mode="bounce"), source, 250, 10.0).n_frames == 300


def test_the_options_defaults_come_from_the_settings_they_are_made_under() -> None:
    source = summary(n_frames=100, native_rate="30", native_frames=120)
    settings = Settings(sync_mode="cut_off", frame_rate="25")
    job = plan(JobOptions.under(settings), source, mouth_frames=250, chunk_seconds=1.0)
    assert (job.timeline.mode, job.rate, job.n_frames) == ("cut_off", "25", 100)


@pytest.mark.parametrize("mode", ["cut_off", "loop", "bounce", "silence"])
@pytest.mark.parametrize("mouth_frames", [60, 250])
def test_the_recorded_plan_reports_as_the_plan_itself(mode: str, mouth_frames: int) -> None:
    """The finalize task rebuilds the plan from what dub.plan stored, without the mouth track: its report is
    the one the plan itself gives, in every sync mode, shorter or longer audio, with ranges."""
    source = summary(n_frames=100, native_rate="30000/1001", native_frames=120, cuts=[50],
                     shot_person_distance=[0.0, 0.05], other_speaker=[[60, 80]])
    opts = options(sync_mode=mode, ranges=((0.5, 1.5),))
    job = plan(opts, source, mouth_frames, chunk_seconds=1.0)
    again = planned(opts, source, job.n_frames, job.rate, job.chunk_frames)
    assert again.n_frames == job.n_frames
    assert report(again, source, 7) == report(job, source, 7)


def test_the_report_json() -> None:
    source = summary(n_frames=100, cuts=[50], shot_person_distance=[0.0, 0.05], other_speaker=[[60, 80]],
                     target_source="speaker", n_faces=2)
    job = plan(options(sync_mode="loop", ranges=((0.0, 2.0),)), source, mouth_frames=150, chunk_seconds=2.0)
    made = report(job, source, passed_through=50)
    assert made.to_dict() == {
        "frames": 150, "frames_passed_through": 50, "frames_outside_ranges": 100,
        "frames_without_matching_mouth": 0, "fps": 25.0, "frame_rate": "25",
        "face_coverage": 0.96, "face_px": 140.0, "source_frames": 100, "face_choice": "speaker", "source_faces": 2,
        "source_cuts_s": [2.0],
        "source_shots": [{"start_s": 0.0, "end_s": 2.0, "output_s": [[0.0, 2.0], [4.0, 6.0]], "person_distance": 0.0,
                          "other_person": False},
                         {"start_s": 2.0, "end_s": 4.0, "output_s": [[2.0, 4.0]], "person_distance": 0.05,
                          "other_person": True}],
        "other_speaker": [{"start_s": 2.4, "end_s": 3.2, "output_s": [[2.4, 3.2]]}],
        "chunks": 3, "output_seconds": 6.0}
    assert made.other_person_s == [(2.0, 4.0)] and made.other_speaker_s == [(2.4, 3.2)]
    json.dumps(made.to_dict())  # the service stores it as JSON


def test_a_report_without_the_source_summary() -> None:
    """A job whose prep was deleted while it ran still gets its report: the frames, without the source's."""
    opts = options(sync_mode="cut_off", ranges=((0.0, 1.0),))
    made = report(planned(opts, None, 60, "30", 30), None, passed_through=30)
    assert made.to_dict() == {
        "frames": 60, "frames_passed_through": 30, "frames_outside_ranges": 30,
        "frames_without_matching_mouth": 0, "fps": 30.0, "frame_rate": "30",
        "face_coverage": None, "face_px": None, "source_frames": None, "face_choice": None, "source_faces": None,
        "source_cuts_s": [], "source_shots": [], "other_speaker": [], "chunks": 2, "output_seconds": 2.0}
