"""Frame streams over ffmpeg pipes, so no stage ever holds a whole video in memory."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType

import cv2
import numpy as np

from lipdub import FPS
from lipdub.errors import ErrorCode, InputError, LipdubError
from lipdub.media.ffmpeg import FfmpegProcess, run_ffmpeg, run_ffprobe
from lipdub.media.probe import MediaInfo, PacketTimes, probe

# All-frames-seekable normalized source: H.264 with a keyframe every second, so a seek decodes at most
# FPS frames. Near-lossless (CRF 12) because it is re-encoded once more at the end.
# The prep stage's re-encode runs beside the face tracker on the same two cores, so it trades file size for
# speed: ultrafast at CRF 10 costs 7.5 ms/frame at 720p against 12.6 for superfast CRF 12 and is closer to
# the source (PSNR 54.8 vs 54.3 dB), at about twice the file size (ultrafast CRF 16 was smaller but
# visibly changed pixels the renderer must leave alone); keyframes every second as above.
PREP_NORMALIZED_ARGS = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", "-g", str(FPS),
                        "-pix_fmt", "yuv420p"]


def native_args(fps: float) -> list[str]:
    """Encoder arguments of the native-rate copy: as video.mp4's, with a keyframe every second."""
    args = list(PREP_NORMALIZED_ARGS)
    args[args.index("-g") + 1] = str(max(1, round(fps)))
    return args


MIN_SOURCE_FPS = 5.0  # below this a "video" is a slideshow: nothing to lip-sync
NORMALIZED_ARGS = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-g", str(FPS), "-pix_fmt", "yuv420p"]


def normalize_video(src: Path, dst: Path, max_height: int = 2160) -> tuple[int, int, int]:
    """Re-time `src` to constant 25 fps, apply its rotation, make sizes even; return (width, height, frames).

    ffmpeg auto-rotates on decode, so phone videos come out upright; the fps filter maps the source
    timeline (VFR or any rate) onto 25-fps slots by nearest timestamp, which is the mapping kept in the
    source track (frame i of the output ↔ source time i / 25 s).
    """
    scale = f"scale=w=-2:h='min({max_height},ih-mod(ih,2))':flags=bicubic"
    vf = f"fps={FPS},{scale},setsar=1"
    tmp = dst.with_suffix(".tmp" + dst.suffix)
    run_ffmpeg(["-y", "-i", str(src), "-map", "0:v:0", "-an", "-vf", vf, *NORMALIZED_ARGS, "-movflags", "+faststart",
                str(tmp)], code=ErrorCode.unsupported_video, what=f"{src.name}: ffmpeg could not decode the video")
    tmp.replace(dst)
    info = probe(dst)
    assert info.video is not None
    frames = count_frames(dst)
    return info.video.width, info.video.height, frames


F_SETPIPE_SZ = 1031  # fcntl command (Linux); the fcntl module names it only from Python 3.10 on some builds


def widen_pipe(stream: object, size: int = 1 << 20) -> None:
    """Give a frame pipe a 1 MB kernel buffer instead of 64 KB: a 720p RGB frame (2.7 MB) then crosses in 3
    wake-ups instead of 42, which took ~15 ms of system time per frame in the render stage (read + write)."""
    # OSError: not Linux, or above /proc/sys/fs/pipe-max-size; the default buffer still works.
    with contextlib.suppress(OSError):
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, size)  # type: ignore[attr-defined]


def count_frames(path: Path) -> int:
    """The video packets of a file this project wrote or already probed (so a failure is `internal`)."""
    out = run_ffprobe(["-select_streams", "v:0", "-count_packets", "-show_entries", "stream=nb_read_packets",
                       "-of", "csv=p=0", str(path)], code=ErrorCode.internal,
                      what=f"{path.name}: ffprobe could not count the frames").strip()
    return int(out.split(",")[0])


@dataclass(frozen=True)
class PipeFormat:
    """How decoded frames cross an ffmpeg pipe: even sizes as 4:2:0, turned into RGB here by OpenCV (BT.601,
    the matrix ffmpeg's swscale uses, to within a level), odd ones as ffmpeg's RGB. 4:2:0 is half the
    pipe's bytes, and OpenCV converts a 720p frame in 0.3 ms where swscale took several times that of the
    decoder's CPU (bounce over a 14-s 720p source: decoding 7.6 -> 6.2 s for 1,800 frames)."""

    width: int
    height: int

    @property
    def yuv(self) -> bool:
        return self.width % 2 == 0 and self.height % 2 == 0

    @property
    def args(self) -> list[str]:
        return ["-f", "rawvideo", "-pix_fmt", "yuv420p" if self.yuv else "rgb24", "pipe:1"]

    @property
    def nbytes(self) -> int:
        return self.width * self.height * 3 // 2 if self.yuv else self.width * self.height * 3

    def rgb(self, buf: bytes) -> np.ndarray:
        raw = np.frombuffer(buf, np.uint8)
        if self.yuv:
            return cv2.cvtColor(raw.reshape(self.height * 3 // 2, self.width), cv2.COLOR_YUV2RGB_I420)
        return raw.reshape(self.height, self.width, 3)


class Decoder:
    """One ffmpeg process decoding RGB frames (`PipeFormat`), which a thread reads up to `ahead` frames in
    advance; `args` are ffmpeg's up to the output.

    Without it the decoder could only fill one pipe buffer (a third of a 720p frame) while the caller worked,
    then made the caller wait for the rest: the render stage spent ~5 ms a frame waiting on it with a core idle.
    """

    def __init__(self, args: list[str], shape: tuple[int, int, int], what: str, ahead: int = 3) -> None:
        self._format = PipeFormat(shape[1], shape[0])
        args = [*args, *self._format.args]
        # Never raises on close: the reader kills it once it has its frames, and a stream that ends early
        # shows as a short read (FrameReader repeats the last frame).
        self._proc = FfmpegProcess(args, code=ErrorCode.internal, what=what, stdout=True)
        widen_pipe(self._proc.stdout)
        self._queue: Queue[np.ndarray | None] = Queue(maxsize=ahead)
        self._ended = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while len(buf := self._proc.stdout.read(self._format.nbytes)) == self._format.nbytes:
            self._queue.put(self._format.rgb(buf))
        self._queue.put(None)  # end of stream (or killed): a short read

    def next(self) -> np.ndarray | None:
        """The next frame, or None once the stream has ended."""
        if self._ended:
            return None
        frame = self._queue.get()
        self._ended = frame is None
        return frame

    def close(self) -> None:
        self._proc.kill()
        while self._thread.is_alive():  # unblock a pump waiting on a full queue
            with contextlib.suppress(Empty):
                self._queue.get(timeout=0.05)
        self._proc.close()  # reaps it; after the pump, which reads its stdout


class FrameReader:
    """Random access to the RGB frames of a constant-frame-rate video (25 fps unless told), in constant memory.

    Sequential reads stream from one ffmpeg process (decoding a few frames ahead). Reading in reverse (the
    reverse half of `bounce`) decodes the block of frames from the keyframe at or before the wanted index
    (`block` is the file's keyframe interval, so blocks are keyframe-aligned and every frame is decoded
    once) and serves the following reads from a cache. Any other jump back (a loop's restart, the forward
    half after a bounce) restarts the stream there: one process, not one per frame.
    """

    def __init__(self, path: Path, width: int, height: int, n_frames: int, block: int = FPS,
                 fps: float = FPS) -> None:
        self.path, self.width, self.height, self.n_frames, self.block = path, width, height, n_frames, block
        self.fps = fps  # of the file (constant): frame i starts at i / fps
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._stream: Decoder | None = None
        self._next = 0  # index the running stream yields next
        self._last: int | None = None  # the index asked for last
        self.decoders = 0  # ffmpeg processes started (tests and benchmarks count them)

    def _start(self, index: int, count: int | None = None) -> Decoder:
        args = ["-ss", f"{index / self.fps:.6f}", "-i", str(self.path)]
        if count is not None:
            args += ["-frames:v", str(count)]
        self.decoders += 1
        return Decoder(args, (self.height, self.width, 3), f"{self.path.name}: ffmpeg could not decode the video")

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.block * 2:
            self._cache.popitem(last=False)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(index)
        # A short step back is reading in reverse (1 frame at a time, or 2-3 through a RetimedReader of a
        # faster source); a longer jump back is a restart.
        reverse = self._last is not None and 0 < self._last - index < self.block
        self._last = index
        if index in self._cache:
            return self._cache[index]
        if self._stream is not None and self._next <= index < self._next + self.block:
            while self._next <= index:  # short skip forward: keep streaming
                frame = self._stream.next()
                if frame is None:
                    break
                self._remember(self._next, frame)
                self._next += 1
            if index in self._cache:
                return self._cache[index]
        if reverse:
            # Decode from the keyframe at or before `index` up to it; the next reads in reverse come from it.
            start = index - index % self.block
            block = self._start(start, index - start + 1)
            for i in range(start, index + 1):
                frame = block.next()
                if frame is None:
                    break
                self._remember(i, frame)
            block.close()
            if index in self._cache:
                return self._cache[index]
        self._stop()
        self._stream, self._next = self._start(index), index
        frame = self._stream.next()
        if frame is None:  # the container reported more frames than it decodes: repeat the last one
            return self[index - 1]
        self._remember(index, frame)
        self._next = index + 1
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self[i]

    def _stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        self._stop()
        self._cache.clear()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RetimedReader:
    """The 25-fps frames of a video at another constant rate (`retime_index`: the frame nearest in time),
    read through a FrameReader of that video."""

    def __init__(self, reader: FrameReader, n_frames: int) -> None:
        self.reader, self.n_frames = reader, n_frames
        self.width, self.height = reader.width, reader.height

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(index)
        return self.reader[min(retime_index(index, self.reader.fps), self.reader.n_frames - 1)]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self[i]

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> RetimedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encode RGB frames to H.264 yuv420p at `rate` (an ffmpeg rate: "25", "30000/1001") through a pipe.

    A feeder thread writes to the encoder, so the caller renders the next frames while x264 takes the last
    ones (serial, a 720p frame's write blocked about as long as the render stage computed); at most `queue`
    frames wait. Frames are converted to 4:2:0 when queued (so the caller may reuse its arrays): OpenCV's
    BT.601 conversion takes 0.3 ms of a 720p frame where ffmpeg's swscale took ~4 ms of the encoder's CPU
    (the same values: both round-trip a decoded frame to within 0.7 of a level), and the pipe carries half
    the bytes. Sizes must be even, as x264's 4:2:0 needs.
    """

    def __init__(self, path: Path, width: int, height: int, crf: int = 16, preset: str = "veryfast",
                 queue: int = 4, rate: str = str(FPS), tune: str = "film") -> None:
        if width % 2 or height % 2:
            raise ValueError(f"{path.name}: H.264 4:2:0 needs even sizes, not {width}x{height}")
        self.path = path
        self._tmp = path.with_suffix(".tmp" + path.suffix)
        args = ["-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
                "-r", rate, "-i", "pipe:0", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                *(["-tune", tune] if tune != "none" else []), "-pix_fmt", "yuv420p", "-r", rate, "-movflags", "+faststart", str(self._tmp)]
        self._proc = FfmpegProcess(args, code=ErrorCode.internal, what=f"ffmpeg encoder failed: {path.name}",
                                   stdin=True)
        widen_pipe(self._proc.stdin)
        self.frames = 0
        self._queue: Queue[np.ndarray | None] = Queue(maxsize=queue)
        self._failed: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        try:
            while (frame := self._queue.get()) is not None:
                self._proc.stdin.write(frame.data)
        except OSError as exc:  # the encoder died (broken pipe): close() reports its stderr
            self._failed = exc
            while self._queue.get() is not None:  # keep taking frames so write() never blocks for good
                pass

    def write(self, frame: np.ndarray) -> None:
        if self._failed is not None:
            self._proc.close()  # the encoder has exited: raises with its stderr
            raise LipdubError(ErrorCode.internal, f"ffmpeg encoder stopped: {self.path.name} ({self._failed})")
        self._queue.put(cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2YUV_I420))
        self.frames += 1

    def close(self) -> None:
        self._queue.put(None)
        self._feeder.join()
        self._proc.close()  # raises when the encoder failed
        if self._failed is not None:
            raise LipdubError(ErrorCode.internal, f"ffmpeg encoder failed: {self.path.name} ({self._failed})")
        self._tmp.replace(self.path)  # written under a temp name so a crash never leaves a half file

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._queue.put(None)  # the feeder ends: its write fails on the killed encoder, or it takes this
            self._feeder.join()
            self._proc.close()
            self._tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# Prep normalization: one ffmpeg pass writes the normalised source and streams small analysis frames.

@dataclass(frozen=True)
class Normalization:
    """How a source becomes the constant-25-fps, upright, even-sized H.264 file the stages read."""

    width: int  # normalised size
    height: int
    analysis_width: int  # size of the frames the face tracker sees
    analysis_height: int
    copy: bool  # the source already qualifies: remux without re-encoding
    changes: tuple[str, ...]  # what normalisation fixes: fps, vfr, rotation, odd_size, scale, aspect, codec, gop
    # The source's own frame rate (an ffmpeg rate such as "30000/1001") when it is not 25 fps: prep then
    # writes the normalised source at that constant rate (native.mp4) instead of 25 fps, for the output.
    native_rate: str | None = None

    @property
    def native_fps(self) -> float | None:
        return None if self.native_rate is None else float(Fraction(self.native_rate))


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def plan_normalization(info: MediaInfo, max_height: int, analysis_height: int,
                       packets: PacketTimes | None = None) -> Normalization:
    """Decide the normalised and analysis sizes, and whether a plain remux is enough.

    Raises InputError(unsupported_video) for what ffmpeg can't normalise: no decodable video stream, a
    rotation that is not a multiple of 90°, or a frame rate so low (a slideshow) that there is no motion
    to keep.
    """
    v = info.video
    name = info.path.name
    if v is None or v.width <= 0 or v.height <= 0:
        raise InputError(ErrorCode.unsupported_video, f"{name}: no decodable video stream")
    if v.rotation % 90 != 0:
        raise InputError(ErrorCode.unsupported_video,
                         f"{name}: rotated by {v.rotation}°; only multiples of 90° can be normalised")
    if 0 < v.fps < MIN_SOURCE_FPS:
        raise InputError(ErrorCode.unsupported_video,
                         f"{name}: {v.fps:.2f} frames/s is a slideshow, not a video (at least {MIN_SOURCE_FPS})")
    dw, dh = v.display_size
    height = min(max_height, dh - dh % 2)
    width = _even(dw * height / dh)
    a_height = min(height, analysis_height)
    a_width = _even(width * a_height / height)
    changes = []
    if v.variable_frame_rate:
        changes.append("vfr")
    if not (abs(v.fps - FPS) < 0.01 and abs((v.nominal_fps or v.fps) - FPS) < 0.01):
        changes.append("fps")
    if v.rotation:
        changes.append("rotation")
    if dw % 2 or dh % 2:
        changes.append("odd_size")
    if height < dh - dh % 2:
        changes.append("scale")
    if abs(v.sample_aspect - 1.0) > 1e-3:
        changes.append("aspect")
    if v.codec != "h264" or v.pix_fmt != "yuv420p":
        changes.append("codec")
    if packets is not None and (packets.max_keyframe_gap > 2 * FPS or not packets.pts
                                or abs(packets.pts[0]) > 1e-3):
        changes.append("gop")  # long GOPs make the render stage's backward seeks slow; odd start times shift them
    copy = packets is not None and not changes
    native = native_rate(v.fps or v.nominal_fps)
    return Normalization(width, height, a_width, a_height, copy, tuple(changes),
                         None if float(Fraction(native)) == FPS else native)


# The frame rates of film, TV and the web. A source near one of them is taken to be at it: a VFR phone clip
# averaging 29.94 fps is 30000/1001 material.
STANDARD_RATES = ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60")
MAX_NATIVE_FPS = 60  # faster sources (slow-motion captures) are output at 60: each frame is rendered


def native_rate(fps: float) -> str:
    """The constant rate (an ffmpeg rate string) a source of average `fps` keeps in the output."""
    if fps >= MAX_NATIVE_FPS:
        return str(MAX_NATIVE_FPS)
    nearest = min(STANDARD_RATES, key=lambda r: abs(float(Fraction(r)) - fps))
    return nearest if abs(float(Fraction(nearest)) - fps) <= 0.01 * fps else str(max(1, round(fps)))


def source_timeline(pts: list[float], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """For each 25-fps output frame: the index of the source frame shown and its time (s from the start).

    The fps filter fills each 25-fps slot with the source frame nearest in time (dropping or repeating
    frames), so the same nearest-timestamp rule maps the normalised timeline back to the source.
    """
    times = np.asarray(sorted(pts), np.float64)
    if times.size == 0:
        return np.zeros(n_frames, np.int32), np.arange(n_frames, dtype=np.float32) / FPS
    times -= times[0]
    slots = np.arange(n_frames) / FPS
    right = np.clip(np.searchsorted(times, slots), 1, max(1, times.size - 1))
    left = right - 1
    nearest = np.where(np.abs(times[np.minimum(right, times.size - 1)] - slots) < np.abs(times[left] - slots),
                       np.minimum(right, times.size - 1), left)
    return nearest.astype(np.int32), times[nearest].astype(np.float32)


def retime_index(i: int, fps: float) -> int:
    """The frame of a video at constant `fps` that stands for 25-fps frame i: the one nearest in time to i / 25
    (ties to the later one). Prep analyses these frames and SourceTrack.reader serves them, so landmarks and
    pixels always come from the same frame."""
    return int(i * fps / FPS + 0.5)


class NormalizingStream:
    """Write the normalised source to `dst` and yield the analysis frames (RGB) of the same pass, at 25 fps.

    Re-encoding sources decode once: ffmpeg splits the filtered stream into the encoder and the analysis
    pipe. Qualifying sources are remuxed (no re-encode) and the copy is decoded for analysis. A source not at
    25 fps (plan.native_rate) is written at its own constant rate, and the analysis frames are picked from
    it by `retime_index` (some skipped, or some repeated below 25 fps). A reader thread keeps a few frames
    queued so decoding overlaps the tracking instead of waiting on the pipe. Memory stays constant: at most
    `queue` analysis frames exist at once.
    """

    def __init__(self, src: Path, dst: Path, plan: Normalization, queue: int = 6) -> None:
        self.src, self.dst, self.plan = src, dst, plan
        self._tmp = dst.with_suffix(".tmp" + dst.suffix)
        self._queue: Queue[np.ndarray | None] = Queue(maxsize=queue)
        self._format = PipeFormat(plan.analysis_width, plan.analysis_height)
        self.frames = 0  # 25-fps analysis frames yielded
        self.written = 0  # frames of `dst` (at the native rate, if any)
        self._ended = False
        p = plan
        analysis_scale = (f"scale={p.analysis_width}:{p.analysis_height}:flags=area"
                          if (p.analysis_width, p.analysis_height) != (p.width, p.height) else "null")
        if p.copy:
            self._run_copy()
            args = ["-i", str(self._tmp), "-map", "0:v:0", "-vf", analysis_scale, *self._format.args]
        else:
            # format=yuv420p pins the shared chain to the encoder's format: left open, ffmpeg negotiated
            # rgb24 for it (the analysis pipe's format, before PipeFormat) and converted every frame back for
            # the encoder, which cost 2.5 ms per 720p frame.
            rate = p.native_rate or str(FPS)
            graph = (f"[0:v:0]fps={rate},scale={p.width}:{p.height}:flags=bicubic,format=yuv420p,setsar=1,"
                     f"split=2[out][a];[a]{analysis_scale}[ana]")
            encoder = native_args(p.native_fps) if p.native_fps else PREP_NORMALIZED_ARGS
            args = ["-y", "-i", str(src), "-filter_complex", graph,
                    "-map", "[out]", "-an", *encoder, "-movflags", "+faststart", str(self._tmp),
                    "-map", "[ana]", *self._format.args]
        self._proc = FfmpegProcess(args, code=ErrorCode.unsupported_video,
                                   what=f"{src.name}: ffmpeg could not decode the video", stdout=True)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _run_copy(self) -> None:
        run_ffmpeg(["-y", "-i", str(self.src), "-map", "0:v:0", "-an", "-c", "copy", "-movflags", "+faststart",
                    str(self._tmp)], code=ErrorCode.unsupported_video,
                   what=f"{self.src.name}: ffmpeg could not remux the video")

    def _pump(self) -> None:
        try:
            while True:
                buf = self._proc.stdout.read(self._format.nbytes)
                if len(buf) < self._format.nbytes:
                    break
                self._queue.put(self._format.rgb(buf))  # converted here, beside the tracker
        finally:
            self._queue.put(None)

    def __iter__(self) -> Iterator[np.ndarray]:
        p = self.plan
        while not self._ended:
            frame = self._queue.get()
            if frame is None:
                self._ended = True  # the pump's end marker comes once: later iterations yield nothing
                break
            k, self.written = self.written, self.written + 1
            while (retime_index(self.frames, p.native_fps) if p.native_fps else self.frames) == k:
                self.frames += 1
                yield frame

    def finish(self) -> int:
        """Wait for ffmpeg, move the file into place, return the frame count; raises unsupported_video."""
        for _ in self:  # drain whatever the caller did not consume
            pass
        self._thread.join()  # the pump has seen the end of stdout: close() may close it
        try:
            self._proc.close()  # raises unsupported_video when ffmpeg failed
            if self.frames == 0:
                raise InputError(ErrorCode.unsupported_video,
                                 f"{self.src.name}: ffmpeg could not decode the video (no frames decoded)")
        except InputError:
            self._tmp.unlink(missing_ok=True)
            raise
        self._tmp.replace(self.dst)
        return self.frames

    def abort(self) -> None:
        self._proc.kill()
        while self._thread.is_alive():  # unblock the pump if it waits on a full queue
            try:
                self._queue.get_nowait()
            except Empty:
                self._thread.join(0.05)
        self._proc.close()
        self._tmp.unlink(missing_ok=True)
