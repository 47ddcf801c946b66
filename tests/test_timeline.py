import pytest

from lipdub.timeline import Timeline


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
