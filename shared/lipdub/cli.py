"""`lipdub` command line: the embedded pipeline and the tools around it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lipdub.config import Device, SyncMode, get_settings
from lipdub.errors import LipdubError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)


def _fail(exc: LipdubError) -> None:
    err.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc.message}')}")
    raise typer.Exit(2)


@app.command()
def dub(
    video: Annotated[Path, typer.Argument(help="Source video with one speaking face")],
    audio: Annotated[Path, typer.Argument(help="New speech track (any format ffmpeg reads)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output MP4")] = Path("out.mp4"),
    sync_mode: Annotated[str, typer.Option(help="cut_off | loop | bounce | silence")] = "bounce",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")] = False,
) -> None:
    """Re-animate the mouth in VIDEO to match AUDIO and write the muxed result."""
    from lipdub.pipeline import dub as run
    from lipdub.progress import ConsoleProgress

    if sync_mode not in SyncMode.__args__:  # type: ignore[attr-defined]
        raise typer.BadParameter(f"must be one of {', '.join(SyncMode.__args__)}", param_hint="--sync-mode")  # type: ignore[attr-defined]
    if device not in Device.__args__:  # type: ignore[attr-defined]
        raise typer.BadParameter(f"must be one of {', '.join(Device.__args__)}", param_hint="--device")  # type: ignore[attr-defined]
    try:
        result = run(video, audio, out, get_settings(), sync_mode=sync_mode, device=device,  # type: ignore[arg-type]
                     progress=ConsoleProgress(quiet))
    except LipdubError as exc:
        _fail(exc)
        return
    err.print(f"[green]wrote[/] {result.output} ({result.frames} frames, "
              f"{result.passed_through} passed through, face in {result.face_coverage:.0%} of source frames)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output MP4")] = Path("out/demo.mp4"),
) -> None:
    """Make sample inputs (a synthetic talking-head clip and espeak-ng speech) and dub them."""
    from lipdub.demo import make_demo_inputs
    from lipdub.pipeline import dub as run
    from lipdub.progress import ConsoleProgress

    video, audio = make_demo_inputs(out.parent / "demo_inputs")
    err.print(f"inputs: {video} {audio}")
    try:
        result = run(video, audio, out, get_settings(), progress=ConsoleProgress())
    except LipdubError as exc:
        _fail(exc)
        return
    err.print(f"[green]wrote[/] {result.output} ({result.frames} frames)")


if __name__ == "__main__":
    app()
