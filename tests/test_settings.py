"""Settings that take effect: every field of lipdub.config.Settings is read by the code, and the dub defaults
(LIPDUB_SYNC_MODE, LIPDUB_FRAME_RATE, LIPDUB_DEVICE) change what `lipdub dub` does."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from lipdub.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CODE = (ROOT / "shared", ROOT / "services")


def _is_settings(node: ast.expr, aliases: set[str]) -> bool:
    """`settings`, `self.settings`, `run.settings`, `get_settings()`, or a local name bound to one of them."""
    if isinstance(node, ast.Name):
        return "settings" in node.id.lower() or node.id in aliases
    if isinstance(node, ast.Attribute):
        return "settings" in node.attr.lower()
    if isinstance(node, ast.Call):
        func = node.func
        return (isinstance(func, ast.Name) and func.id == "get_settings") or (
            isinstance(func, ast.Attribute) and func.attr == "get_settings")
    return False


def _strings(node: ast.expr | None) -> list[str]:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def settings_reads(tree: ast.Module) -> set[str]:
    """The names a module reads off a settings object: attributes (`settings.device`, `s.device` after
    `s = self.settings`), `getattr(settings, "name")`, and `getattr(settings, name) for name in NAMES` with
    NAMES a tuple of strings assigned at the module's top (such as jobs.FROM_SETTINGS)."""
    constants = {target.id: _strings(node.value) for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    aliases = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and _is_settings(node.value, set()) for target in node.targets if isinstance(target, ast.Name)}
    loops: dict[str, list[str]] = {}  # loop variable → the strings it runs over
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension | ast.For) and isinstance(node.target, ast.Name):
            over = node.iter
            loops[node.target.id] = constants.get(over.id, []) if isinstance(over, ast.Name) else _strings(over)
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _is_settings(node.value, aliases):
            read.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and _is_settings(node.args[0], aliases)):
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                read.add(name.value)
            elif isinstance(name, ast.Name):
                read.update(loops.get(name.id, []))
    return read


def unread_fields(fields: Iterable[str], roots: Iterable[Path]) -> list[str]:
    read: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            read |= settings_reads(ast.parse(path.read_text(), str(path)))
    return sorted(set(fields) - read)


def test_every_setting_is_read_by_the_code() -> None:
    """A field nothing reads is a promise the code does not keep (LIPDUB_SYNC_MODE once was one)."""
    assert unread_fields(Settings.model_fields, CODE) == []


def test_the_scan_tells_a_read_setting_from_an_unread_one(tmp_path: Path) -> None:
    (tmp_path / "module.py").write_text(
        "NAMES = ('by_loop',)\n"
        "def f(settings, options, run):\n"
        "    s = run.settings\n"
        "    values = {name: getattr(settings, name) for name in NAMES}\n"
        "    return settings.plain, s.aliased, get_settings().called, getattr(settings, 'named'), options.other\n")
    fields = ["plain", "aliased", "called", "named", "by_loop", "other", "never"]
    assert unread_fields(fields, [tmp_path]) == ["never", "other"]  # `options.other` is not a setting


def test_the_data_directory_is_the_users_cache_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIPDUB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert Settings().data_dir == tmp_path / "lipdub"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG rule says
    assert Settings().data_dir == Path.home() / ".cache" / "lipdub"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert Settings().data_dir == Path.home() / ".cache" / "lipdub"
    monkeypatch.setenv("LIPDUB_DATA_DIR", str(tmp_path / "set"))
    assert Settings().data_dir == tmp_path / "set"


def test_the_services_set_their_data_directory(tmp_path: Path) -> None:
    """A service must not keep its storage and caches in whichever user's home it runs as: the images,
    compose (.env.example), k8s and `make stack` all set LIPDUB_DATA_DIR."""
    from lipdub.service.stack import StackConfig

    service_dir = "LIPDUB_DATA_DIR=/var/lib/lipdub"
    assert service_dir in (ROOT / ".env.example").read_text().splitlines()
    assert service_dir in (ROOT / "k8s" / "base" / "config.env").read_text().splitlines()
    assert f"{service_dir} \\" in [line.strip() for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines()]
    assert StackConfig(root=tmp_path).environment()["LIPDUB_DATA_DIR"] == str((tmp_path / "var").resolve())


# --- `lipdub dub` under the settings ------------------------------------------------------------------
@pytest.fixture(scope="module")
def thirty_fps(demo_inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of the demo clip at 30 fps."""
    out = tmp_path_factory.mktemp("thirty") / "thirty.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(demo_inputs[0]), "-t", "2", "-vf", "fps=30",
                    "-c:v", "libx264", "-crf", "18", str(out)], check=True)
    return out


def lipdub_dub(video: Path, audio: Path, out: Path, data_dir: Path, *flags: str,
               **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    # The settings under test, on the fast models: what is checked is which length and rate come out.
    environ |= {"LIPDUB_DATA_DIR": str(data_dir), "LIPDUB_AUDIO_MODEL": "energy", "LIPDUB_RENDERER": "warp",
                **{f"LIPDUB_{k.upper()}": v for k, v in env.items()}}
    return subprocess.run([sys.executable, "-m", "lipdub.cli", "dub", str(video), str(audio), "-o", str(out), "-q",
                           *flags], env=environ, cwd=out.parent, capture_output=True, text=True, timeout=600)


def stream(path: Path) -> tuple[str, int]:
    """The video stream's frame rate and frame count."""
    text = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                           "stream=r_frame_rate,nb_read_packets", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()
    rate, frames = text.split(",")
    return rate, int(frames)


def test_lipdub_dub_takes_its_defaults_from_the_settings(thirty_fps: Path, demo_inputs: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """LIPDUB_SYNC_MODE=cut_off ends the ~9-s dub with the 2-s source (bounce would play 9 s) and
    LIPDUB_FRAME_RATE=25 re-times the 30-fps source; the command's own options win over both."""
    audio = demo_inputs[1]
    by_env = lipdub_dub(thirty_fps, audio, tmp_path / "env.mp4", tmp_path / "var", sync_mode="cut_off",
                        frame_rate="25")
    assert by_env.returncode == 0, by_env.stderr
    assert stream(tmp_path / "env.mp4") == ("25/1", 50)
    by_flags = lipdub_dub(thirty_fps, audio, tmp_path / "flags.mp4", tmp_path / "var", "--frame-rate", "source",
                          "--device", "cpu", sync_mode="cut_off", frame_rate="25", device="cuda")
    assert by_flags.returncode == 0, by_flags.stderr
    assert stream(tmp_path / "flags.mp4") == ("30/1", 60)


def test_lipdub_device_reaches_the_dub(thirty_fps: Path, demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is there: LIPDUB_DEVICE=cuda would dub")
    failed = lipdub_dub(thirty_fps, demo_inputs[1], tmp_path / "out.mp4", tmp_path / "var", device="cuda")
    assert failed.returncode == 2 and "no CUDA device" in " ".join(failed.stderr.split()), failed.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_lipdub_version() -> None:
    from importlib.metadata import version

    import lipdub

    done = subprocess.run([sys.executable, "-m", "lipdub.cli", "--version"], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == f"lipdub {version('lipdub')}" == f"lipdub {lipdub.__version__}"
