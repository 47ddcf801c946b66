"""`lipdub` command line: the embedded pipeline and the tools around it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lipdub import native_stderr
from lipdub.audio.student_recipe import StudentRecipe
from lipdub.config import Device, FrameRate, SyncMode, get_settings
from lipdub.demo import make_demo_inputs
from lipdub.errors import LipdubError
from lipdub.jobs import FaceTarget, JobOptions
from lipdub.media.mux import OUTPUT_SUFFIXES
from lipdub.memory import one_malloc_arena
from lipdub.prep.tracking import Target
from lipdub.progress import ConsoleProgress
from lipdub.timeline import dub_ranges

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"lipdub {version('lipdub')}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print lipdub's version and exit")] = False) -> None:
    one_malloc_arena()  # before any stage starts its threads (lipdub.memory)
    ctx.with_resource(native_stderr.filtered())  # for the whole command: MediaPipe starts in any of them


def _fail(exc: LipdubError) -> None:
    err.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc.message}')}")
    raise typer.Exit(2)


@app.command()
def dub(
    video: Annotated[Path, typer.Argument(help="Source video with one speaking face")],
    audio: Annotated[Path, typer.Argument(help="New speech track (any format ffmpeg reads)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output MP4")] = Path("out.mp4"),
    sync_mode: Annotated[str | None, typer.Option(
        help="cut_off | loop | bounce | silence (default: LIPDUB_SYNC_MODE, bounce)")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: LIPDUB_DEVICE, auto)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")] = False,
    face: Annotated[str | None, typer.Option(
        help="The face to dub when the video shows several: a point X,Y or a box X0,Y0,X1,Y1 in pixels of "
             "the upright video (default: the largest, most central, most persistent face)")] = None,
    face_time: Annotated[float, typer.Option(help="Seconds into the video where --face is visible")] = 0.0,
    dub_range: Annotated[list[str] | None, typer.Option(
        "--range", help="Re-animate only START-END of the output (seconds, or timecodes such as 1:02.5-1:10; "
                        "repeat for several, in time order). "
                        "Elsewhere the source frames are kept, e.g. a reaction shot of another person; the "
                        "new audio plays throughout")] = None,
    frame_rate: Annotated[str | None, typer.Option(
        help="source: keep the video's own frame rate (23.976, 29.97, ... up to 60); 25: re-time to 25 fps "
             "(default: LIPDUB_FRAME_RATE, source)")] = None,
) -> None:
    """Re-animate the mouth in VIDEO to match AUDIO and write the muxed result."""
    # lazy: the pipeline imports every stage (1.5 s); `lipdub --help` stays fast
    from lipdub.pipeline import dub as run

    for value, choices, hint in ((sync_mode, SyncMode, "--sync-mode"), (device, Device, "--device"),
                                 (frame_rate, FrameRate, "--frame-rate")):
        if value is not None and value not in choices.__args__:  # type: ignore[attr-defined]
            raise typer.BadParameter(f"must be one of {', '.join(choices.__args__)}", param_hint=hint)  # type: ignore[attr-defined]
    check_output(out)
    ranges = parse_ranges(dub_range or [])
    settings = get_settings()
    if device is not None:
        settings = settings.model_copy(update={"device": device})
    # Options not given take their defaults from the settings (LIPDUB_SYNC_MODE, LIPDUB_FRAME_RATE).
    options = JobOptions.under(settings, sync_mode=sync_mode, frame_rate=frame_rate, ranges=ranges or None,
                               target_face=parse_face(face, face_time) or "auto")
    try:
        result = run(video, audio, out, settings, options, progress=ConsoleProgress(quiet))
    except LipdubError as exc:
        _fail(exc)
        return
    outside = f", {result.outside_ranges} of them outside --range" if ranges else ""
    err.print(f"[green]wrote[/] {result.output} ({result.frames} frames at {result.fps:.6g} fps, "
              f"{result.passed_through} passed through{outside}, face in {result.face_coverage:.0%} of source "
              "frames)")
    if result.face_choice == "speaker":
        what = (f"{result.faces} faces: the most prominent one's lips do not follow the video's own soundtrack; "
                "dubbed the one whose lips do" if "dominant_face_silent" in result.flags else
                f"{result.faces} faces were equally prominent; dubbed the one whose lips follow the video's own "
                "soundtrack")
        err.print(f"[yellow]note[/] {what}. To dub another, give --face.")
    if result.unmatched:
        err.print(f"[yellow]note[/] {result.unmatched} frames asked for mouth shapes the video never shows; "
                  "they were drawn with the nearest one it has, bent into shape. A longer or more varied source "
                  "(or LIPDUB_RENDERER=dinet) draws them better.")
    total = result.frames / result.fps
    if result.other_speaker_s:
        spans, hint = leave_out(result.other_speaker_s, total)
        err.print(f"[yellow]note[/] another face talks in {spans} of the output (in the video's own soundtrack); "
                  f"those lines were dubbed onto the chosen face.{hint}")
    if result.other_person_s:
        spans, hint = leave_out(result.other_person_s, total)
        err.print(f"[yellow]note[/] the face in {spans} of the output looks like a different person from the main "
                  f"one (a reaction shot?).{hint}")


def leave_out(spans: list[tuple[float, float]], total: float) -> tuple[str, str]:
    """`spans` as text, and the --range options that would dub everything but them."""
    keep = " ".join(f"--range {a:g}-{b:g}" for a, b in complement(spans, total))
    hint = f" To keep the source's frames there, dub again with {keep}" if keep else ""
    return ", ".join(f"{a:g}-{b:g} s" for a, b in spans), hint


def complement(spans: list[tuple[float, float]], total: float) -> list[tuple[float, float]]:
    """The stretches of [0, total) outside the sorted, non-overlapping `spans`."""
    out, at = [], 0.0
    for a, b in spans:
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < total:
        out.append((at, total))
    return out


def parse_ranges(texts: list[str]) -> tuple[tuple[float, float], ...]:
    """`--range START-END` options (seconds or [HH:]MM:SS[.mmm] timecodes) → checked dub ranges
    (lipdub.timeline.dub_ranges)."""
    pairs = []
    for text in texts:
        start, _, end = text.partition("-")
        try:
            pairs.append((seconds(start), seconds(end)))
        except ValueError:  # not two times (a missing dash leaves `end` empty)
            raise typer.BadParameter(f"{text!r}: give START-END in seconds or timecodes, e.g. 12.5-20 or "
                                     "1:02.5-1:10", param_hint="--range") from None
    try:
        return dub_ranges(pairs)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--range") from exc


def seconds(text: str) -> float:
    """`12.5`, `1:02.5` or `0:01:02.5` → seconds; ValueError for anything else."""
    *larger, last = text.strip().split(":")  # hours and minutes, or minutes, before the seconds
    value = float(last)
    if len(larger) > 2 or not all(p.isdigit() for p in larger) or (larger and not 0 <= value < 60):
        raise ValueError(text)
    return value + sum(int(p) * 60**k for k, p in enumerate(reversed(larger), start=1))


def check_output(out: Path) -> None:
    """Refuse an output path ffmpeg can't write an H.264 + AAC file to, before any work is done."""
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a directory; name the file, e.g. {out / 'dubbed.mp4'}", param_hint="--out")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise typer.BadParameter(f"{out.name!r}: the result is H.264 video with AAC audio; name it "
                                 f"{', '.join(OUTPUT_SUFFIXES[:-1])} or {OUTPUT_SUFFIXES[-1]}", param_hint="--out")


def parse_face(face: str | None, time: float) -> FaceTarget | None:
    """`--face X,Y` or `--face X0,Y0,X1,Y1` (pixels) at `--face-time` into the job option."""
    if face is None:
        return None
    try:
        values = [float(v) for v in face.split(",")]
        if len(values) not in (2, 4):
            raise ValueError("give a point X,Y or a box X0,Y0,X1,Y1")
        # prep's rule for a face choice, with its own message (FaceTarget applies it too)
        target = (Target(time, point=(values[0], values[1])) if len(values) == 2 else
                  Target(time, box=(values[0], values[1], values[2], values[3])))
    except ValueError as exc:
        raise typer.BadParameter(f"a point X,Y or a box X0,Y0,X1,Y1 in pixels: {exc}", param_hint="--face") from exc
    return FaceTarget(time=target.time, point=target.point, box=target.box)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output MP4")] = Path("out/demo.mp4"),
) -> None:
    """Make sample inputs (a synthetic talking-head clip and espeak-ng speech) and dub them."""
    # lazy: the pipeline imports every stage (1.5 s)
    from lipdub.pipeline import dub as run

    check_output(out)
    video, audio = make_demo_inputs(out.parent / "demo_inputs")
    err.print(f"inputs: {video} {audio}")
    try:
        result = run(video, audio, out, get_settings(), progress=ConsoleProgress())
    except LipdubError as exc:
        _fail(exc)
        return
    err.print(f"[green]wrote[/] {result.output} ({result.frames} frames)")


@app.command()
def preflight(
    video: Annotated[Path, typer.Argument(help="Source video to check")],
    seconds: Annotated[float | None, typer.Option(help="Seconds to sample (default: LIPDUB_PREFLIGHT_SECONDS)")] = None,
) -> None:
    """Predict the prep verdict for VIDEO from its first seconds; prints the summary as JSON."""
    import json

    # lazy: MediaPipe and OpenCV (1 s)
    from lipdub.prep.preflight import preflight as run

    result = run(video, get_settings(), seconds=seconds)
    typer.echo(json.dumps(result.as_dict(), indent=2))
    if not result.verdict.ok:
        err.print(f"[bold red]would be rejected[/] {escape(f'[{result.verdict.code}] {result.verdict.message}')}")
        raise typer.Exit(2)


@app.command("eval")
def evaluate(
    videos: Annotated[Path, typer.Option(help="Folder of talking clips with their own audio (or a same-named "
                                              "audio file beside each video)")],
    audios: Annotated[Path, typer.Option(help="Folder of speech tracks for cross-dubbing")],
    out: Annotated[Path, typer.Option(help="Report folder: report.json, report.md, plots/")] = Path("report"),
    quick: Annotated[bool, typer.Option("--quick", help="Two shortest clips, 3 s each (CI)")] = False,
    max_seconds: Annotated[float, typer.Option(help="Cut clips and dub tracks to this length")] = 10.0,
    cross_per_clip: Annotated[int, typer.Option(help="Speech tracks each clip is cross-dubbed with")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")] = False,
) -> None:
    """Measure lip-sync quality: ground truth, self-reenactment (reversed source) and cross-dubbing."""
    # lazy: torch, MediaPipe and the whole pipeline (1.6 s)
    from lipdub.eval.protocols import EvalOptions, discover_audios, discover_clips, run_evaluation

    for folder, name in ((videos, "--videos"), (audios, "--audios")):
        if not folder.is_dir():
            raise typer.BadParameter(f"{folder} is not a folder", param_hint=name)
    clips, tracks = discover_clips(videos, quick), discover_audios(audios)
    if not clips:
        raise typer.BadParameter(f"no video with a soundtrack in {videos}", param_hint="--videos")
    options = EvalOptions(max_seconds=min(max_seconds, 3.0) if quick else max_seconds)
    results = run_evaluation(clips, tracks, out, get_settings(), options, cross_per_clip, quiet)
    err.print(f"[green]wrote[/] {out / 'report.md'} ({len(results)} of {len(clips)} clips evaluated)")
    if not results:
        raise typer.Exit(1)


train_app = typer.Typer(no_args_is_help=True, help="Train the models that ship with lipdub.")
app.add_typer(train_app, name="train")


_RECIPE = StudentRecipe()  # the shipped student's choices are the options' defaults


@train_app.command("audio")
def train_audio(
    corpus: Annotated[Path, typer.Option(help="The real-clip corpus (manifest.csv)")] = Path("../shared/corpus"),
    weights: Annotated[Path | None, typer.Option(help="Where to write the weights and card "
                                                 "(default: the package's lipdub/audio/weights)")] = None,
    runs: Annotated[Path, typer.Option(help="TensorBoard log root")] = Path("runs"),
    student_steps: Annotated[int, typer.Option(help="Training steps of the student (a step count, not a time "
                                               "budget, so the weights do not depend on the machine's load)")
                             ] = _RECIPE.steps,
    synthetic: Annotated[int, typer.Option(help="espeak-ng utterances added to the distillation data")
                         ] = _RECIPE.synthetic,
    augmented: Annotated[int, typer.Option(help="Degraded copies of every distillation source")] = _RECIPE.augmented,
    dropout: Annotated[float, typer.Option(help="Dropout between the student's LSTM layers (training only)")
                       ] = _RECIPE.dropout,
    spec_masks: Annotated[int, typer.Option(help="SpecAugment time masks (up to 10 rows) and frequency masks (up "
                                            "to 10 mel bins) per training window of the student (0 = off)")
                          ] = _RECIPE.spec_masks,
    lookahead: Annotated[int, typer.Option(help="Frames of future audio the student hears before it answers; each "
                                           "adds 40 ms of streaming latency (8 gave no gain: BENCHMARKS.md)")
                         ] = _RECIPE.lookahead,
    opening_corr: Annotated[float, typer.Option(help="Weight of the student's loss on the correlation of each "
                                                "window's mouth opening with the teacher's (0 = off)")
                            ] = _RECIPE.opening_corr,
    cepstra: Annotated[int, typer.Option(help="Lifter the student's fbank rows to this many cepstral coefficients "
                                         "(the spectral envelope without the pitch harmonics; 0 = off)")
                       ] = _RECIPE.cepstra,
    seed: Annotated[int, typer.Option(help="Seed of splits, augmentation and training")] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads")] = 1,
    evaluate_only: Annotated[bool, typer.Option(help="Only re-measure the held-out metrics of the weights "
                                                "and update their card")] = False,
) -> None:
    """Fit the audio-to-mouth teacher (Whisper features + ridge) and distill the fbank+LSTM student from it."""
    import json
    import logging

    # lazy, as every heavy import of this module: `lipdub --help` and the light commands start in half a second
    from lipdub.audio.models import weights_dir
    from lipdub.audio.recipe import reevaluate, run  # torch, faster-whisper

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = get_settings()
    if evaluate_only:
        metrics = reevaluate(corpus, settings.data_dir / "audio_model", weights or weights_dir(), threads)
    else:
        recipe = StudentRecipe(steps=student_steps, synthetic=synthetic, augmented=augmented, dropout=dropout,
                               spec_masks=spec_masks, lookahead=lookahead, opening_corr=opening_corr,
                               cepstra=cepstra)
        metrics = run(corpus, settings.data_dir / "audio_model", weights or weights_dir(), runs,
                      encoder_path=settings.audio_encoder, recipe=recipe, seed=seed,
                      threads=threads)["card"]["metrics"]
    # The summaries; the per-clip rows stay in the card.
    err.print(json.dumps({k: v for k, v in metrics.items() if k != "split0_clips"}, indent=1))


admin_app = typer.Typer(no_args_is_help=True, help="Administer the service (tenants' API keys and quotas).")
app.add_typer(admin_app, name="admin")


@admin_app.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to (letters, digits, - and _)")],
) -> None:
    """Print a new API key for TENANT (stored hashed in Redis at LIPDUB_REDIS_URL; shown only once)."""
    import redis

    from lipdub.service.auth import ApiKeys  # lazy: redis

    client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    try:
        key = ApiKeys(client).create(tenant)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tenant") from exc
    except redis.RedisError as exc:
        err.print(f"[bold red]error[/] Redis at {get_settings().redis_url} is not reachable: {exc}")
        raise typer.Exit(1) from exc
    print(key)


@admin_app.command("set-quota")
def set_quota(
    tenant: Annotated[str, typer.Option(help="Tenant whose quotas change")],
    max_concurrent_jobs: Annotated[int | None, typer.Option(min=1, help="Interactive jobs queued or running")] = None,
    max_video_seconds: Annotated[float | None, typer.Option(min=0.1, help="Longest source video (s)")] = None,
    max_file_bytes: Annotated[int | None, typer.Option(min=1, help="Largest input file (bytes)")] = None,
) -> None:
    """Override TENANT's quotas (unset ones keep the LIPDUB_TENANT_* defaults); prints the quotas in force."""
    import json
    from dataclasses import asdict

    import redis

    # lazy: redis
    from lipdub.service.limits import Quotas

    values = {k: v for k, v in {"max_concurrent_jobs": max_concurrent_jobs, "max_video_seconds": max_video_seconds,
                                "max_file_bytes": max_file_bytes}.items() if v is not None}
    client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True)
    try:
        quota = Quotas(client, get_settings()).set(tenant, **values)
    except redis.RedisError as exc:
        err.print(f"[bold red]error[/] Redis at {get_settings().redis_url} is not reachable: {exc}")
        raise typer.Exit(1) from exc
    print(json.dumps({"tenant": tenant, **asdict(quota)}))


@train_app.command("render")
def train_render(
    corpus: Annotated[Path, typer.Option(help="The real-clip corpus (manifest.csv)")] = Path("../shared/corpus"),
    config: Annotated[str, typer.Option(help="mini (CPU, default) | full (GPU)")] = "mini",
    run: Annotated[Path | None, typer.Option(help="Run folder: state, TensorBoard logs, generator.pt "
                                                  "(default: runs/render/CONFIG); rerun to resume")] = None,
    steps: Annotated[int, typer.Option(help="Training steps")] = 5000,
    batch: Annotated[int, typer.Option(help="Batch size per process")] = 12,
    seed: Annotated[int, typer.Option(help="Seed of sampling and initialisation")] = 1009,
    threads: Annotated[int, typer.Option(help="CPU threads (ignored on GPU)")] = 1,
    export: Annotated[Path | None, typer.Option(help="Also write the final weights here (fp16, with .sha256)")] = None,
) -> None:
    """Train the DINet mouth renderer on the corpus (held-out identities excluded); resumable.

    Several GPUs: `torchrun --nproc_per_node N -m lipdub.cli train render ...` (DistributedDataParallel).
    """
    # lazy: torch (2 s)
    from lipdub.render.dinet import CONFIGS, load_checkpoint, save_checkpoint
    from lipdub.render.train import TrainOptions, train_from_corpus

    if config not in CONFIGS:
        raise typer.BadParameter(f"must be one of {', '.join(CONFIGS)}", param_hint="--config")
    opts = TrainOptions(config=config, steps=steps, batch=batch, seed=seed, threads=threads)
    out = train_from_corpus(corpus, get_settings().data_dir, run or Path("runs") / "render" / config, opts)
    if export is not None:
        model, extra = load_checkpoint(out)
        save_checkpoint(export, model, extra=extra, half=True)
        out = export
    err.print(f"[green]wrote[/] {out}")


@app.command()
def enroll(
    source: Annotated[Path, typer.Argument(help="Source video to fine-tune the DINet renderer on")],
    steps: Annotated[int | None, typer.Option(help="Fine-tuning steps (default: LIPDUB_DINET_ENROLL_STEPS)")] = None,
    face: Annotated[str | None, typer.Option(help="The face to tune on, as for `lipdub dub --face`")] = None,
    face_time: Annotated[float, typer.Option(help="Seconds into the video where --face is visible")] = 0.0,
) -> None:
    """Prepare SOURCE and fine-tune the DINet renderer on its own frames; later dubs of SOURCE (same face
    choice) use the result, which is cached with the source's prep."""
    # lazy: torch (2.5 s)
    from lipdub.render.enroll import enroll_source

    try:
        choice = parse_face(face, face_time)
        out = enroll_source(source, get_settings(), steps, choice.target() if choice else None, ConsoleProgress(),
                            log=True)
    except LipdubError as exc:
        _fail(exc)
        return
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="LIPDUB_DINET_WEIGHTS") from exc
    err.print(f"[green]wrote[/] {out} (used by `lipdub dub` for this source)")


if __name__ == "__main__":
    app()
