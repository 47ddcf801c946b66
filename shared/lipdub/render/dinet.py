"""The DINet-family mouth generator (clean-room, after the design notes in reference/dh_live_and_dinet.md §4).

Inputs, all in the mouth window (a square, roll- and scale-normalised crop of the lower face, `window.py`):

- `source` [B, 5, S, S]: the source window warped to the target mouth shape with the mouth region blacked
  out (3 RGB channels), the mask of that region, and the target lip map (`prompt.py`) — the "prompt";
- `refs` [B, 4K, S, S]: K reference windows of the same person (RGB + their own lip map), chosen for
  diverse mouth openings.

The reference features are moved into the target shape by AdaAT (adaptive affine transformation): an
alignment code computed from source and reference features gives every feature channel its own 2-D
similarity transform (scale, rotation, translation), applied with `grid_sample`. The decoder fuses the
source features with the deformed reference features and only the masked mouth region of its output is
used (the rest is the source, so the net cannot drift the face outside the mouth).

`mini` and `full` are one code base; the config travels inside the checkpoint (`save_checkpoint`), which is
loaded with `torch.load(weights_only=True)` after its SHA-256 has been checked.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lipdub.digest import sha256_file

SOURCE_CHANNELS = 5  # masked RGB + region mask + lip map
REF_CHANNELS = 4  # RGB + lip map


@dataclass(frozen=True)
class DinetConfig:
    name: str
    size: int  # mouth-window side in pixels
    refs: int  # number of reference windows
    enc: tuple[int, int, int]  # feature channels at S, S/2, S/4
    align: int  # width of the alignment code
    res_blocks: int  # residual blocks after the AdaAT deformation
    separable: bool  # depthwise-separable convolutions at S and S/2 (the cost is at high resolution)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DinetConfig:
        return cls(**{**d, "enc": tuple(d["enc"])})


CONFIGS = {
    # CPU/throughput: 96-px window, 3 references, ~110 MFLOPs per frame (DH_live mini: 50-103 MFLOPs).
    "mini": DinetConfig("mini", size=96, refs=3, enc=(12, 24, 32), align=48, res_blocks=1, separable=True),
    # GPU quality: 256-px mouth region, 5 references, as classic DINet/DH_live.
    "full": DinetConfig("full", size=256, refs=5, enc=(32, 64, 128), align=128, res_blocks=2, separable=False),
}


def _conv(cin: int, cout: int, stride: int = 1, separable: bool = False) -> nn.Sequential:
    if separable:
        layers: list[nn.Module] = [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                                   nn.Conv2d(cin, cout, 1, bias=False)]
    else:
        layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=False)]
    return nn.Sequential(*layers, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Three levels: S, S/2, S/4; returns all three (the decoder uses the first two as skips)."""

    def __init__(self, cin: int, enc: tuple[int, int, int], separable: bool) -> None:
        super().__init__()
        self.l0 = _conv(cin, enc[0])
        self.l1 = _conv(enc[0], enc[1], 2, separable)
        self.l2 = _conv(enc[1], enc[2], 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f0 = self.l0(x)
        f1 = self.l1(f0)
        return f0, f1, self.l2(f1)


class AdaAT(nn.Module):
    """Per-channel similarity transform of a feature map, parameterised by an alignment code."""

    def __init__(self, code: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(code, code), nn.ReLU(inplace=True), nn.Linear(code, 4 * channels))
        # Start at the identity transform: zero angle/translation, unit scale (2·sigmoid(0) = 1).
        last = self.mlp[2]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, feat: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        p = self.mlp(code).view(b, c, 4)
        scale = 2 * torch.sigmoid(p[..., 0])
        angle = math.pi * torch.tanh(p[..., 1])
        tx, ty = torch.tanh(p[..., 2]), torch.tanh(p[..., 3])
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], -2)
        # Channels become batch items, so each gets its own transform and channels never mix.
        grid = F.affine_grid(theta.view(b * c, 2, 3), [b * c, 1, h, w], align_corners=False)
        out = F.grid_sample(feat.reshape(b * c, 1, h, w), grid.to(feat.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
        return out.view(b, c, h, w)


class DinetGenerator(nn.Module):
    def __init__(self, config: DinetConfig) -> None:
        super().__init__()
        self.config = config
        e0, e1, e2 = config.enc
        self.source_encoder = Encoder(SOURCE_CHANNELS, config.enc, config.separable)
        self.ref_encoder = Encoder(REF_CHANNELS * config.refs, config.enc, config.separable)
        self.ref_appearance = ResBlock(e2)
        self.align = nn.Sequential(_conv(2 * e2, config.align, 2), _conv(config.align, config.align, 2),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.adaat = AdaAT(config.align, e2)
        self.appearance = nn.Sequential(*[ResBlock(e2) for _ in range(config.res_blocks)])
        self.fuse = _conv(2 * e2, e2)
        self.up1 = _conv(e2 + e1, e1, 1, config.separable)
        self.up0 = _conv(e1 + e0, e0, 1, config.separable)
        self.out = nn.Conv2d(e0, 3, 3, 1, 1)

    def encode_refs(self, refs: torch.Tensor) -> torch.Tensor:
        """Reference features (run once per source video at inference and cached)."""
        return self.ref_appearance(self.ref_encoder(refs)[2])

    def forward(self, source: torch.Tensor, refs: torch.Tensor | None = None,
                ref_feat: torch.Tensor | None = None) -> torch.Tensor:
        """The source window with its mouth region re-drawn (the generated pixels blended in)."""
        generated, blend = self.generate(source, refs, ref_feat)
        return source[:, :3] * (1 - blend) + generated * blend

    def generate(self, source: torch.Tensor, refs: torch.Tensor | None = None,
                 ref_feat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw generated window, blend mask): inference colour-matches the raw output before blending."""
        if ref_feat is None:
            assert refs is not None
            ref_feat = self.encode_refs(refs)
        if ref_feat.shape[0] != source.shape[0]:
            ref_feat = ref_feat.expand(source.shape[0], -1, -1, -1)
        s0, s1, s2 = self.source_encoder(source)
        code = self.align(torch.cat([s2, ref_feat], 1))
        moved = self.appearance(self.adaat(ref_feat, code))
        x = self.fuse(torch.cat([s2, moved], 1))
        x = self.up1(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), s1], 1))
        x = self.up0(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), s0], 1))
        # contiguous: a channels-last slice of one channel makes the pooling several times slower.
        return torch.sigmoid(self.out(x)), blend_mask(source[:, 3:4].contiguous())


def blend_mask(mask: torch.Tensor) -> torch.Tensor:
    """The hard mouth mask grown and softened: 1 on the whole masked region, ramping to 0 a few px outside,
    so the generated mouth fades into the real skin instead of ending at an edge."""
    k = max(3, (mask.shape[-1] // 24) | 1)
    grown = F.max_pool2d(mask, k, 1, k // 2)
    return F.avg_pool2d(grown, k, 1, k // 2, count_include_pad=False)


class PatchDiscriminator(nn.Module):
    """LSGAN patch critic over the mouth window (real frames vs generated)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        c = [3, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(c):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(c[-1], 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def count_flops(model: DinetGenerator, size: int | None = None) -> tuple[float, float]:
    """(per-frame FLOPs, once-per-source reference FLOPs) of convolutions and linears (2 per MAC)."""
    size = size or model.config.size
    k = model.config.refs
    counts = {"total": 0.0}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            assert isinstance(module, nn.Linear)
            macs = output.numel() * module.in_features
        counts["total"] += 2.0 * macs

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            refs = torch.zeros(1, REF_CHANNELS * k, size, size)
            ref_feat = model.encode_refs(refs)
            once = counts["total"]
            counts["total"] = 0.0
            model(torch.zeros(1, SOURCE_CHANNELS, size, size), ref_feat=ref_feat)
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    return counts["total"], once


# ---- checkpoints ---------------------------------------------------------------------------------------

class ChecksumError(RuntimeError):
    pass


def save_checkpoint(path: Path, generator: DinetGenerator, extra: dict[str, Any] | None = None,
                    half: bool = False) -> str:
    """Write {config, generator weights, extra} and its `.sha256` sidecar; returns the digest.

    `half=True` stores fp16 weights (the released file; half the size, no measurable quality change for
    inference since BN statistics and weights are well inside fp16 range).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in generator.state_dict().items()}
    payload = {"format": 1, "config": asdict(generator.config), "generator": state, "extra": extra or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    digest = sha256_file(path)
    path.with_suffix(path.suffix + ".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def expected_sha256(path: Path) -> str | None:
    side = path.with_suffix(path.suffix + ".sha256")
    return side.read_text().split()[0] if side.is_file() else None


def load_checkpoint(path: Path, sha256: str | None = None) -> tuple[DinetGenerator, dict[str, Any]]:
    """Verify the file's SHA-256 (given, or its `.sha256` sidecar; one must exist) and load it tensor-only."""
    want = sha256 or expected_sha256(path)
    if want is None:
        raise ChecksumError(f"{path}: no SHA-256 to verify against (missing {path.name}.sha256)")
    got = sha256_file(path)
    if got != want:
        raise ChecksumError(f"{path}: SHA-256 {got} does not match the expected {want}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    config = DinetConfig.from_dict(payload["config"])
    model = DinetGenerator(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["generator"].items()})
    model.eval()
    return model, payload.get("extra", {})
