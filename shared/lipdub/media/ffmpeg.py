"""The one place that runs ffmpeg and ffprobe, with one error behaviour.

Every command is `ffmpeg -v error …` or `ffprobe -v error …`. A failure (a non-zero exit) raises a
LipdubError whose code the caller chooses (InputError for the codes of bad input, where the user can act:
`input_unreadable`, `unsupported_video`; a plain LipdubError for `internal`: a failed encode or mux) and
whose message names what failed and ends with the tail of ffmpeg's stderr. A missing binary is always
`internal`, with a message that says so. Processes never read the terminal: their stdin is /dev/null unless
the caller feeds them (a stray key press would otherwise reach ffmpeg, and `q` stops an encode).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Any, Literal

from lipdub.errors import ErrorCode, InputError, LipdubError

Tool = Literal["ffmpeg", "ffprobe"]
STDERR_TAIL = 500  # characters of ffmpeg's stderr kept in an error message (its last lines say why)


def failure(code: ErrorCode, what: str, stderr: bytes | str, returncode: int | None = None) -> LipdubError:
    """The error for `what` failing: InputError for an input code, LipdubError for `internal`."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    detail = text.strip()[-STDERR_TAIL:] or f"exit status {returncode}"
    message = f"{what} ({detail})"
    return LipdubError(code, message) if code is ErrorCode.internal else InputError(code, message)


def _missing(tool: Tool, what: str) -> LipdubError:
    return LipdubError(ErrorCode.internal, f"{what} ({tool} is not installed: it was not found on PATH)")


def command(tool: Tool, args: Sequence[str]) -> list[str]:
    """The full command line: the tool, errors only on stderr, then `args`."""
    return [tool, "-v", "error", *args]


def run_ffmpeg(args: Sequence[str], *, code: ErrorCode, what: str,
               tool: Tool = "ffmpeg") -> subprocess.CompletedProcess[bytes]:
    """Run `ffmpeg -v error *args` to the end; its stdout is in the result (bytes). Raises on failure."""
    try:
        result = subprocess.run(command(tool, args), stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise _missing(tool, what) from exc
    if result.returncode != 0:
        raise failure(code, what, result.stderr, result.returncode)
    return result


def run_ffprobe(args: Sequence[str], *, code: ErrorCode, what: str) -> str:
    """The stdout (text) of `ffprobe -v error *args`. Raises as run_ffmpeg does."""
    return run_ffmpeg(args, code=code, what=what, tool="ffprobe").stdout.decode()


def ffprobe_json(path: str, *, code: ErrorCode, what: str) -> dict[str, Any]:
    """ffprobe's description of a file's format and streams (its JSON output)."""
    out = run_ffprobe(["-show_format", "-show_streams", "-of", "json", path], code=code, what=what)
    data: dict[str, Any] = json.loads(out)
    return data


class FfmpegProcess:
    """A running ffmpeg whose stdin (if `stdin`) or stdout (if `stdout`) is a pipe the caller streams through.

    `close()` waits for the exit and raises as run_ffmpeg does when it failed, unless `kill()` stopped it
    first: a reader that has what it wants kills the decoder, and its exit status then means nothing. A
    thread drains stderr (keeping its tail), so ffmpeg never blocks on a full stderr pipe.
    """

    def __init__(self, args: Sequence[str], *, code: ErrorCode, what: str, stdin: bool = False,
                 stdout: bool = False) -> None:
        self.code, self.what = code, what
        try:
            self._proc = subprocess.Popen(command("ffmpeg", args),
                                          stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                          stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise _missing("ffmpeg", what) from exc
        self._killed = False
        self._stderr = b""
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        while chunk := self._proc.stderr.read(4096):
            self._stderr = (self._stderr + chunk)[-4 * STDERR_TAIL:]  # bounded: only the tail is reported

    @property
    def stdin(self) -> IO[bytes]:
        assert self._proc.stdin is not None, "started without stdin=True"
        return self._proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self._proc.stdout is not None, "started without stdout=True"
        return self._proc.stdout

    def kill(self) -> None:
        """Stop ffmpeg now (a pipe reader then sees the end of the stream); close() will not raise."""
        self._killed = True
        self._proc.kill()

    def close(self) -> None:
        """End stdin, wait for the exit, close the pipes; raises when ffmpeg failed and was not killed."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):  # already broken: the exit status says why
                self._proc.stdin.close()
        code = self._proc.wait()
        self._drain.join()
        assert self._proc.stderr is not None
        self._proc.stderr.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if code != 0 and not self._killed:
            raise failure(self.code, self.what, self._stderr, code)
