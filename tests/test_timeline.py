import re

import pytest

from lipdub.timeline import Timeline, dub_ranges


def test_bounce_is_a_palindrome_without_jumps() -> None:
    tl = Timeline(n_video=4, n_audio=11, mode="bounce")
    assert tl.n_out == 11
    assert [tl.source_index(t) for t in range(11)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]


def test_loop_restarts() -> None:
    tl = Timeline(n_video=3, n_audio=7, mode="loop")
    assert [tl.source_index(t) for t in range(tl.n_out)] == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize(("n_video", "n_audio", "expected"), [(10, 4, 4), (4, 10, 4)])
def test_cut_off_takes_the_shorter(n_video: int, n_audio: int, expected: int) -> None:
    assert Timeline(n_video, n_audio, "cut_off").n_out == expected


def test_silence_pads_the_audio_to_the_video() -> None:
    tl = Timeline(n_video=10, n_audio=4, mode="silence")
    assert tl.n_out == 10
    assert tl.audio_index(3) == 3 and tl.audio_index(4) is None
    assert [tl.source_index(t) for t in range(10)] == list(range(10))


def test_single_frame_video() -> None:
    tl = Timeline(n_video=1, n_audio=5, mode="bounce")
    assert {tl.source_index(t) for t in range(5)} == {0}


def test_without_ranges_every_frame_is_dubbed() -> None:
    timeline = Timeline(10, 10, "cut_off")
    assert [timeline.dub_weight(t) for t in range(10)] == [1.0] * 10


def test_a_range_fades_in_and_out_and_nothing_outside_is_dubbed() -> None:
    timeline = Timeline(100, 100, "cut_off", dub_ranges([(1.0, 2.0)]))  # frames 25..49
    weights = [timeline.dub_weight(t) for t in range(100)]
    assert weights[:25] == [0.0] * 25 and weights[50:] == [0.0] * 50
    assert weights[25:30] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # FADE_FRAMES = 4
    assert weights[45:50] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert min(weights[29:46]) == 1.0


def test_a_range_shorter_than_two_fades_peaks_below_one() -> None:
    timeline = Timeline(100, 100, "cut_off", dub_ranges([(0.0, 0.12), (2.0, 2.04)]))  # 3 frames, 1 frame
    assert [timeline.dub_weight(t) for t in range(4)] == pytest.approx([0.2, 0.4, 0.2, 0.0])
    assert timeline.dub_weight(50) == pytest.approx(0.2) and timeline.dub_weight(51) == 0.0


@pytest.mark.parametrize(("pairs", "message"), [
    ([(2.0, 1.0)], "range 1 (2-1 s): needs 0 <= start < end"),
    ([(-1.0, 1.0)], "range 1"),
    ([(0.0, 5.0), (4.0, 6.0)], "range 2 (4-6 s) starts before range 1 ends (5 s)"),
    ([(3.0, 4.0), (1.0, 2.0)], "range 2 (1-2 s) starts before range 1 ends"),
    ([(0.0, float("inf"))], "range 1"),
])
def test_bad_ranges_are_refused_with_which_one(pairs: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        dub_ranges(pairs)


def test_output_runs_find_every_pass_over_a_source_stretch() -> None:
    bounce = Timeline(100, 241, "bounce")  # forward 0..99, back 98..0, forward again
    assert bounce.output_runs(50, 100) == [(50, 149)]
    assert Timeline(100, 241, "loop").output_runs(50, 100) == [(50, 100), (150, 200)]
    assert Timeline(100, 60, "cut_off").output_runs(50, 100) == [(50, 60)]
    assert Timeline(1, 5, "bounce").output_runs(0, 1) == [(0, 5)] and Timeline(10, 30, "silence").output_runs(5, 7) == \
        [(5, 7), (12, 14), (23, 25)]  # 0..9, back 8..0 (6 and 5 at 12 and 13), forward again
    assert all(Timeline(37, 200, mode).output_runs(3, 20) ==  # one rule: the frames whose source_index is inside
               [(a, b) for a, b in _runs([3 <= Timeline(37, 200, mode).source_index(t) < 20 for t in range(200)])]
               for mode in ("bounce", "loop"))


def test_a_shot_at_25_fps_maps_to_output_seconds_at_the_sources_rate() -> None:
    # A 30-fps timeline: the 25-fps frames [50, 100) (2-4 s of the source) show at output frames [60, 120).
    assert Timeline(300, 300, "cut_off", rate="30").source_spans_s(50, 100) == [(2.0, 4.0)]
    assert Timeline(250, 250, "cut_off").source_spans_s(50, 100) == [(2.0, 4.0)]


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for t, inside in enumerate(flags):
        if inside:
            runs = runs[:-1] + [(runs[-1][0], t + 1)] if runs and runs[-1][1] == t else [*runs, (t, t + 1)]
    return runs
