"""What a dub will make and what it made, worked out once for both paths (`lipdub dub` and the Celery tasks).

`plan()`: from the job's options, the source's prep summary and the dub's mouth track, the output's frame
rate, its `Timeline` (sync mode, dub ranges) and its render chunks. `report()`: from a plan and the source,
the job report (frames, where shots and other speakers show in the output, ...), which the service stores as
JSON (`Report.to_dict`) and `lipdub dub` turns into its notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from lipdub import FPS
from lipdub.jobs import JobOptions
from lipdub.prep.shots import shot_spans
from lipdub.prep.track import TrackSummary, output_rate
from lipdub.timeline import Timeline, frames_at

Span = tuple[float, float]  # (start, end) seconds


@dataclass(frozen=True)
class Plan:
    """The output: its timeline at its frame rate (`timeline.rate`), cut into render chunks of
    `chunk_frames` frames, so a lost worker redoes one chunk, not the job."""

    timeline: Timeline
    chunk_frames: int

    @property
    def rate(self) -> str:
        """The output's frame rate as ffmpeg takes it: the source's own ("30000/1001") or "25"."""
        return self.timeline.rate

    @property
    def n_frames(self) -> int:
        return self.timeline.n_out

    @property
    def chunks(self) -> list[range]:
        return render_chunks(self.n_frames, self.chunk_frames)


def plan(options: JobOptions, summary: TrackSummary, mouth_frames: int, chunk_seconds: float) -> Plan:
    """The plan of a dub of the source `summary` describes with a mouth track of `mouth_frames` (25 fps)."""
    # The source's own frame rate unless the job asks for 25 fps (prep's 25-fps view of it: SourceTrack.reader).
    rate = output_rate(summary.native_rate, options.frame_rate)
    fps = float(Fraction(rate))
    return planned(options, summary, frames_at(mouth_frames, rate), rate, max(1, round(chunk_seconds * fps)))


def planned(options: JobOptions, summary: TrackSummary | None, audio_frames: int, rate: str,
            chunk_frames: int) -> Plan:
    """A plan already made, from what `dub.plan` stored (`rate`, `chunk_frames`), for the tasks after it, so
    every chunk is cut alike whatever a worker's own settings. `audio_frames` at the output rate: the mouth
    track's, or the output's length (for the report: with as many audio frames as output frames every sync
    mode gives that length back). Without the source's summary (its prep deleted while the job ran) the source
    counts as `audio_frames` long."""
    n_video = summary.frames_at(rate) if summary is not None else audio_frames
    return Plan(Timeline(n_video, audio_frames, options.sync_mode, options.dub_ranges, rate), chunk_frames)


def render_chunks(n_frames: int, chunk_frames: int) -> list[range]:
    """The output's frames [0, n_frames) in runs of `chunk_frames` (the last one shorter)."""
    return [range(start, min(start + chunk_frames, n_frames)) for start in range(0, n_frames, chunk_frames)]


@dataclass(frozen=True)
class Shot:
    """A shot of the source (seconds of the 25-fps source), where it shows in the output (several spans in
    loop and bounce modes) and whether its face is likely another person's than the main shot's."""

    start_s: float
    end_s: float
    output_s: list[Span]
    person_distance: float | None
    other_person: bool


@dataclass(frozen=True)
class Turn:
    """A stretch of the source (seconds) where another face than the dubbed one talks, and where it shows
    in the output."""

    start_s: float
    end_s: float
    output_s: list[Span]


@dataclass(frozen=True)
class Report:
    """A finished dub. The source's fields are None when its summary is gone (the service: its prep was
    deleted while the job ran)."""

    frames: int
    passed_through: int  # no usable face, or outside the job's ranges
    outside_ranges: int
    rate: str
    chunks: int
    unmatched: int = 0  # re-drawn without a mouth of the target's shape (lipdub.render.protocols.Rendered)
    face_coverage: float | None = None
    face_px: float | None = None
    source_frames: int | None = None  # the source's length in frames at the output's rate (like `frames`)
    face_choice: str | None = None  # auto | user | speaker (TrackSummary.target_source)
    source_faces: int | None = None
    source_cuts_s: list[float] = field(default_factory=list)  # seconds of the 25-fps source
    source_shots: list[Shot] = field(default_factory=list)
    other_speaker: list[Turn] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))

    @property
    def other_person_s(self) -> list[Span]:
        """The output spans showing a shot whose face is likely another person's (a reaction shot)."""
        return sorted(span for shot in self.source_shots if shot.other_person for span in shot.output_s)

    @property
    def other_speaker_s(self) -> list[Span]:
        """The output spans where another face talks in the source: its lines are dubbed onto this face."""
        return sorted(span for turn in self.other_speaker for span in turn.output_s)

    def to_dict(self) -> dict[str, Any]:
        """The job report's JSON fields (the service adds its durations and sync estimate)."""
        def spans(output_s: list[Span]) -> list[list[float]]:
            return [[round(a, 2), round(b, 2)] for a, b in output_s]

        return {
            "frames": self.frames,
            "frames_passed_through": self.passed_through,
            "frames_outside_ranges": self.outside_ranges,
            # Frames whose mouth shape the source never shows (the exemplar renderer drew the nearest one it
            # has, bent onto the target): a source with few mouth shapes, worth a look in review.
            "frames_without_matching_mouth": self.unmatched,
            "fps": round(self.fps, 3),  # the output's frame rate: the source's own, or 25
            "frame_rate": self.rate,  # the same, exactly (an ffmpeg rate such as 30000/1001)
            "face_coverage": self.face_coverage,
            "face_px": self.face_px,
            "source_frames": self.source_frames,
            # How the dubbed face was chosen: auto (the dominant face), user (target_face) or speaker (faces
            # tied; the one whose lips follow the source's own soundtrack, lipdub.prep.speaker).
            "face_choice": self.face_choice,
            "source_faces": self.source_faces,
            # Where the source cuts to another shot: each shot was dubbed with its own references
            # (lipdub.prep.shots); worth a look at each in review.
            "source_cuts_s": [round(cut, 2) for cut in self.source_cuts_s],
            # Each shot's output_s is in seconds of the output, as the job's `ranges` take them; nothing is
            # left out automatically.
            "source_shots": [{"start_s": round(shot.start_s, 2), "end_s": round(shot.end_s, 2),
                              "output_s": spans(shot.output_s), "person_distance": shot.person_distance,
                              "other_person": shot.other_person} for shot in self.source_shots],
            # Another face's lines (lipdub.prep.speaker) were dubbed onto this face; `ranges` can leave them out.
            "other_speaker": [{"start_s": round(turn.start_s, 2), "end_s": round(turn.end_s, 2),
                               "output_s": spans(turn.output_s)} for turn in self.other_speaker],
            "chunks": self.chunks,
            "output_seconds": round(self.frames / self.fps, 3),
        }


def report(job: Plan, summary: TrackSummary | None, passed_through: int, unmatched: int = 0) -> Report:
    """The report of a dub made by `job` from the source `summary` describes, with `passed_through` frames
    left as the source's and `unmatched` drawn without a mouth of the target's shape."""
    timeline = job.timeline
    made = Report(job.n_frames, passed_through, timeline.frames_outside_ranges(), job.rate, len(job.chunks),
                  unmatched)
    if summary is None:
        return made
    s = summary
    return replace(
        made, face_coverage=s.face_coverage, face_px=s.face_px, source_frames=s.frames_at(job.rate),
        face_choice=s.target_source, source_faces=s.n_faces, source_cuts_s=[cut / FPS for cut in s.cuts],
        source_shots=[Shot(shot.start / FPS, shot.end / FPS, timeline.source_spans_s(shot.start, shot.end),
                           shot.person_distance, shot.other_person)
                      for shot in shot_spans(s.cuts, s.n_frames, s.shot_person_distance)],
        other_speaker=[Turn(start / FPS, end / FPS, timeline.source_spans_s(start, end))
                       for start, end in s.other_speaker])
