"""The exemplar renderer: every output mouth is a real mouth of the same source, chosen and warped in place.

A source already holds hundreds of mouths of its person in its light; a generator that draws a 96-px window
loses their colour, skin texture and teeth. Per shot, the library (`MouthLibrary`) keeps the lower face of
every usable frame at frame resolution, with its lip shape and head pose in a roll- and scale-free frame
(a similarity on the stable landmarks). Per output frame:

1. selection (`select_path`): the library frame whose lip shape is closest to the target lips and whose
   pose is close to the frame's, with a cost for jumps so consecutive output frames take consecutive source
   frames (a Viterbi path over each batch, continued from the previous batch's last pick, as in
   unit-selection speech synthesis and Video Rewrite);
2. the jaw and chin of the frame move to the target's opening with the warp renderer's field (as DINet's);
3. the chosen lower face is mapped onto the target lips, the moved jaw and the frame's nose and cheeks by a
   thin-plate spline at frame resolution, smoothed in steps where the exact spline would fold over (still
   folded: the frame with its jaw warped is drawn instead);
4. its colour is matched locally to the frame (ratio of local means over the skin around the mouth, so a
   change of light between the two frames is undone and the lips keep their own colour), and it is blended
   over the mouth and the skin around it (`mouth_region`, inside the lower-face mask the other renderers
   may change), its fine detail switched rather than averaged across the feather (`two_band`).

Where no library mouth is near the target (a shape the source never shows), the nearest one is still taken
and the spline bends it onto the target; such frames, and the folded ones, are counted (`unmatched`, which
the render stage adds up for the job's report).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from lipdub.face import landmarks as L
from lipdub.render import paste
from lipdub.render.warp import GRID_STEP, MOVABLE, WarpRenderer, target_from_opening, target_landmarks

if TYPE_CHECKING:
    from lipdub.prep.track import SourceTrack

# Rigid points off the stable set: after the stable similarity, what is left of their offsets is yaw/pitch.
POSE_POINTS = [10, 151, 4, 5, 195, 197, 234, 454, 93, 323, 127, 356, 105, 334]
# Skin points around the mouth that the spline pins to the frame (nose base, cheeks beside the mouth).
ANCHORS = [2, 98, 327, 97, 326, 206, 426, 205, 425, 36, 266, 187, 411, 50, 280]
POSE_WEIGHT = 1.0  # cost of pose distance against lip distance (both ×100 / inter-ocular distance)
JUMP_COST = 2.0  # a jump to a non-consecutive source frame costs this much lip distance
HOLD_COST = 0.6  # the same source frame twice in a row (a still mouth) costs less than a jump
FALLBACK_LMD = 6.0  # nearest library lips farther than this from the target: the source lacks the shape
LIBRARY_BYTES = 256 << 20  # crops kept per shot; longer shots keep evenly spaced runs of frames
RUN = 25  # frames per run when a long shot is thinned (runs keep consecutive frames for the path)
CROP_MARGIN = 0.12  # × face height around the lower face's feathered bounds
COLOUR_SIGMA = 0.25  # local colour means over this many inter-ocular distances
MAX_GAIN = 1.35  # local colour gain limits
SMOOTHING = (1e-2, 10.0, 100.0, 1000.0)  # thin-plate smoothing tried in turn until the map does not fold
MOUTH_MARGIN = 0.35  # × mouth width: the skin around the lips that comes with the chosen mouth
DETAIL_SIGMA = 0.006  # × face height: finer than this is detail, switched rather than blended


def reference_face(points: np.ndarray) -> np.ndarray:
    """A face [478, 2] centred on its stable points, inter-ocular distance 100 (distances in LMD units)."""
    xy = points[:, :2].astype(np.float64)
    return (xy - xy[L.STABLE].mean(0)) * 100.0 / max(float(L.inter_ocular(xy)), 1e-6)


def describe(points: np.ndarray, lips: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lip shape [N, K, 2], pose [N, P, 2]) of frames `points` [N, 478, 2+] whose lips are `lips`
    [N, K, 2] (K = 40, or several lip sets side by side), in the reference's roll- and scale-free frame."""
    xy = points[..., :2].astype(np.float64)
    lips_n, pose = np.empty(lips.shape, np.float32), np.empty((len(xy), len(POSE_POINTS), 2), np.float32)
    for n, (p, q) in enumerate(zip(xy, lips.astype(np.float64), strict=True)):
        s, rot, t = L.umeyama(p[L.STABLE], reference[L.STABLE])
        lips_n[n], pose[n] = s * q @ rot.T + t, s * p[POSE_POINTS] @ rot.T + t
    return lips_n, pose


def costs(lib_lips: np.ndarray, lib_pose: np.ndarray, lips: np.ndarray, pose: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(unary cost [T, M], lip distance [T, M]) of library entries for T targets (mean point distances)."""
    lip = np.linalg.norm(lips[:, None] - lib_lips[None], axis=-1).mean(-1)
    head = np.linalg.norm(pose[:, None] - lib_pose[None], axis=-1).mean(-1)
    return lip + POSE_WEIGHT * head, lip


def select_path(unary: np.ndarray, prev: np.ndarray, start: int | None = None, jump: float = JUMP_COST,
                hold: float = HOLD_COST) -> np.ndarray:
    """Viterbi path [T] over library entries: unary [T, M] costs; moving from entry j to the entry of the
    next source frame (prev[k] == j) is free, staying on j costs `hold`, anything else `jump`. `start`: the
    entry chosen just before this window (its transition counts)."""
    t_len, m = unary.shape
    back = np.zeros((t_len, m), np.int64)
    if start is None:
        total = unary[0].astype(np.float64)
    else:
        total = np.full(m, jump, np.float64)
        total[start] = hold
        total[prev == start] = 0.0
        total += unary[0]
    has_prev = prev >= 0
    for t in range(1, t_len):
        best = int(np.argmin(total))
        cand = np.full(m, total[best] + jump)
        arg = np.full(m, best, np.int64)
        stay = total + hold
        better = stay < cand
        cand[better], arg[better] = stay[better], np.flatnonzero(better)
        step = np.where(has_prev, total[np.maximum(prev, 0)], np.inf)
        better = step < cand
        cand[better], arg[better] = step[better], prev[better]
        total = cand + unary[t]
        back[t] = arg
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(total))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


@dataclass
class MouthLibrary:
    frames: np.ndarray  # [M] source frame of each entry
    crops: list[np.ndarray]  # [h, w, 3] uint8 lower face of each entry
    origins: np.ndarray  # [M, 2] int: each crop's top-left corner, frame px
    points: np.ndarray  # [M, 478, 2] float32 landmarks, frame px
    lips: np.ndarray  # [M, 40, 2] lip shape (`describe`)
    pose: np.ndarray  # [M, P, 2] head pose (`describe`)
    reference: np.ndarray  # [478, 2] the frame `describe` works in
    prev: np.ndarray  # [M] entry of the previous source frame, or -1

    @classmethod
    def build(cls, frames: Sequence[np.ndarray], indices: np.ndarray, points: np.ndarray,
              feather: float = 0.08) -> MouthLibrary:
        """Entries for frames `frames` (source frames `indices` [M] int, landmarks `points` [M, 478, 2+])."""
        xy = points[..., :2].astype(np.float32)
        reference = reference_face(xy[len(xy) // 2])
        crops, origins = [], []
        for frame, p in zip(frames, xy, strict=True):
            face_px = float(np.ptp(p[L.FACE_OVAL, 1]))
            x0, y0, x1, y1 = paste.lower_face_bounds(p, feather * face_px)
            pad = int(CROP_MARGIN * face_px)
            h, w = frame.shape[:2]
            x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
            crops.append(np.ascontiguousarray(frame[y0:y1, x0:x1]))
            origins.append((x0, y0))
        lips, pose = describe(xy, xy[:, L.LIPS], reference)
        idx = np.asarray(indices, np.int64)
        where = {int(f): k for k, f in enumerate(idx)}
        prev = np.array([where.get(int(f) - 1, -1) for f in idx], np.int64)
        return cls(idx, crops, np.asarray(origins, np.int64), xy, lips, pose, reference, prev)

    @staticmethod
    def pick(valid: np.ndarray, crop_bytes: float, budget: int = LIBRARY_BYTES) -> np.ndarray:
        """The frames a library of `valid` frames keeps: all, or evenly spaced runs of RUN frames."""
        idx = np.flatnonzero(valid)
        keep = max(RUN, int(budget // max(crop_bytes, 1.0)))
        if len(idx) <= keep:
            return idx
        runs = [idx[i:i + RUN] for i in range(0, len(idx), RUN)]
        chosen = np.linspace(0, len(runs) - 1, max(1, keep // RUN)).round().astype(int)
        return np.concatenate([runs[i] for i in sorted(set(chosen.tolist()))])


class ExemplarRenderer:
    name = "exemplar"

    def __init__(self, library: MouthLibrary, batch: int = 12, feather: float = 0.08) -> None:
        """`batch`: frames per call of the render stage, which is also the window of the Viterbi path."""
        self.library, self.batch = library, batch
        self.warp = WarpRenderer(feather)
        self.last: int | None = None  # the entry chosen for the previous output frame
        self.counts = {"frames": 0, "jumps": 0, "holds": 0, "fallbacks": 0, "folds": 0, "far_folds": 0}
        self.far = np.zeros(0, bool)  # of the last `choose`: no library mouth near the target
        self.distance = [0.0, 0.0]  # summed lip distance of the chosen entries / of the frame's own lips

    @classmethod
    def for_track(cls, track: SourceTrack, batch: int = 12) -> ExemplarRenderer:
        """The renderer of a prepared source (`SourceTrack.for_shot`: its valid frames are the shot's, so a
        cut to another person never lends its mouths)."""
        landmarks, valid = track.landmarks, track.valid
        idx = np.flatnonzero(valid)
        if idx.size == 0:
            raise ValueError("no usable face in this shot: nothing to take mouths from")
        face_px = float(np.median(np.ptp(landmarks[idx, :, 1][:, L.FACE_OVAL], axis=1)))
        keep = MouthLibrary.pick(valid, 3 * (1.6 * face_px) ** 2 * 0.6)
        wanted = set(keep.tolist())
        frames = []
        with track.reader() as reader:
            for i in range(int(keep[0]), int(keep[-1]) + 1):  # one sequential pass over the shot
                frame = reader[i]
                if i in wanted:
                    frames.append(frame)
        return cls(MouthLibrary.build(frames, keep, landmarks[keep]), batch)

    target = staticmethod(target_landmarks)

    @property
    def unmatched(self) -> int:
        """Frames drawn without a mouth of the target's shape: no library mouth near it (the nearest one was
        bent onto it), or the bend would fold it (the warped frame instead). For the job's report."""
        return self.counts["fallbacks"] + self.counts["folds"] - self.counts["far_folds"]

    def stats(self) -> dict[str, float]:
        n = max(self.counts["frames"], 1)
        return {"jump_share": self.counts["jumps"] / n, "hold_share": self.counts["holds"] / n,
                "fallback_share": self.counts["fallbacks"] / n, "fold_share": self.counts["folds"] / n,
                "chosen_vs_own_lip_distance": self.distance[0] / max(self.distance[1], 1e-6)}

    def choose(self, points: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> np.ndarray:
        """Library entries for consecutive output frames (landmarks `points`, target sets `targets`)."""
        lib = self.library
        p = np.stack([q[:, :2] for q in points]).astype(np.float32)
        tgt = np.stack([t[L.LIPS, :2] for t in targets]).astype(np.float32)
        # The target lips and the frames' own (for `stats`) in one fit of each frame's pose.
        both, pose = describe(p, np.concatenate([tgt, p[:, L.LIPS]], axis=1), lib.reference)
        lips, own = both[:, :len(L.LIPS)], both[:, len(L.LIPS):]
        unary, lip = costs(lib.lips, lib.pose, lips, pose)
        path = select_path(unary, lib.prev, self.last)
        before = self.last
        for t, k in enumerate(path):
            self.counts["frames"] += 1
            if before is not None and k != before and lib.prev[k] != before:
                self.counts["jumps"] += 1
            self.counts["holds"] += int(before is not None and k == before)
            self.counts["fallbacks"] += int(lip[t, k] > FALLBACK_LMD)
            self.distance[0] += float(lip[t, k])
            self.distance[1] += float(np.linalg.norm(own[t] - lips[t], axis=-1).mean())
            before = int(k)
        self.last = before
        self.far = lip[np.arange(len(path)), path] > FALLBACK_LMD
        return path

    def prepare(self, frames: Sequence[np.ndarray], points: Sequence[np.ndarray],
                targets: Sequence[np.ndarray]) -> list[tuple[np.ndarray, dict | None]]:
        """Selection for the batch and the jaw warp of each frame (the render stage's first half)."""
        if not frames:
            return []
        path = self.choose(points, targets)
        return [(f, self._prepare(f, p, t, int(k), bool(far)))
                for f, p, t, k, far in zip(frames, points, targets, path, self.far, strict=True)]

    def finish(self, prepared: Sequence[tuple[np.ndarray, dict | None]]) -> list[np.ndarray]:
        """The chosen mouths warped, colour-matched and blended in (the second half)."""
        return [frame if job is None else self._finish(job) for frame, job in prepared]

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
        return self.finish(self.prepare([frame], [points], [self.target(points, opening)]))[0]

    def _prepare(self, frame: np.ndarray, points: np.ndarray, target: np.ndarray, entry: int, far: bool
                 ) -> dict | None:
        drawable = self.warp.drawable(points, frame.shape)
        if drawable is None:
            return None
        box, face_px, feather = drawable
        x0, y0, x1, y1 = box
        # The warp moves jaw and chin (and the frame's own lips, which the exemplar covers) to the opening
        # rule at the target's opening, as in the DINet renderer: the chosen mouth is placed over that.
        warp_target = target_from_opening(points, float(L.mouth_opening(target)))
        moved = points[:, :2].astype(np.float32).copy()
        moved[MOVABLE] = warp_target[MOVABLE]
        fx0, fy0, fx1, fy1 = paste.lower_face_bounds(moved, feather)
        bx0, by0, bx1, by1 = max(fx0, x0), max(fy0, y0), min(fx1, x1), min(fy1, y1)
        if bx1 - bx0 < 16 or by1 - by0 < 16:
            return None
        step = max(GRID_STEP, round(face_px / 28))
        map_x, map_y = self.warp.backward_map(points, np.array(MOVABLE), warp_target[MOVABLE].astype(np.float64),
                                              box, step, (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0))
        # Cubic: a bilinear remap at fractional offsets halves the skin's fine detail (Laplacian variance).
        warped = cv2.remap(frame[y0:y1, x0:x1], map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        work = (bx0, by0, bx1, by1)
        return {"frame": frame, "warped": warped, "work": work, "entry": entry, "far": far, "points": points[:, :2],
                "moved": moved, "target": target[:, :2], "face_px": face_px, "feather": feather}

    def _finish(self, job: dict) -> np.ndarray:
        lib = self.library
        k = job["entry"]
        x0, y0, x1, y1 = job["work"]
        h, w = y1 - y0, x1 - x0
        target, moved, points = job["target"], job["moved"], job["points"]
        ex = lib.points[k]
        # Backward map output px -> chosen frame px: lips onto the target lips, jaw onto the moved jaw, the
        # skin around the mouth onto the frame's own.
        out_ctrl = np.concatenate([target[L.LIPS], moved[L.JAW], points[ANCHORS]]).astype(np.float64)
        ex_ctrl = np.concatenate([ex[L.LIPS], ex[L.JAW], ex[ANCHORS]]).astype(np.float64)
        s = max(4, round(job["face_px"] / 40))
        ny, nx = -(-h // s), -(-w // s)
        gy, gx = np.mgrid[0:ny, 0:nx].astype(np.float64)
        # Nodes where cv2.resize's half-pixel convention puts them, so the upsampled map is exact there.
        nodes = np.stack([x0 + (gx.ravel() + 0.5) * s - 0.5, y0 + (gy.ravel() + 0.5) * s - 0.5], 1)
        # The region of the frame the mouth goes into, and the frame with its jaw warped inside the lower
        # face (what the mouth is blended over). Only the mouth and the skin around it come from the chosen
        # frame; the rest of the lower face is the frame's own, warped (a whole chosen lower face doubled
        # the seam colour jump at the jaw line: on the tuning clips 6.8 against 3.8 grey levels).
        frame = job["frame"]
        face = paste.lower_face_mask(moved, job["work"], job["feather"])
        region = np.minimum(face, mouth_region(target, moved, job["work"], MOUTH_MARGIN))
        real = frame[y0:y1, x0:x1]
        under = cv2.blendLinear(job["warped"], real, face, 1.0 - face)
        out = frame.copy()
        inside = cv2.resize(region, (nx, ny), interpolation=cv2.INTER_AREA) > 0.02
        # Lips the chosen mouth can't be bent onto exactly without folding it over itself (a wide-open
        # mouth closed onto a line, say): a smoother spline, which follows the landmarks less closely.
        for smoothing in SMOOTHING:
            spline = RBFInterpolator(out_ctrl, ex_ctrl, kernel="thin_plate_spline", smoothing=smoothing)
            src = (spline(nodes) - lib.origins[k]).astype(np.float32).reshape(ny, nx, 2)
            if not folds(src, s, inside):
                break
        else:
            # Still folded: the warped frame.
            self.counts["folds"] += 1
            self.counts["far_folds"] += int(job["far"])
            out[y0:y1, x0:x1] = under
            return out
        fine = cv2.resize(src, (nx * s, ny * s), interpolation=cv2.INTER_LINEAR)[:h, :w]
        mouth = cv2.remap(lib.crops[k], fine[..., 0], fine[..., 1], cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
        gain = local_gain(mouth, under, skin_around(target, moved, job["work"], job["face_px"]),
                          COLOUR_SIGMA * float(L.inter_ocular(points)))
        # Fine detail switches at the region's middle (`two_band`), so the feather doesn't average two skins
        # into a blur.
        pixels = two_band(mouth.astype(np.float32) * gain, under.astype(np.float32), region,
                          max(1.0, DETAIL_SIGMA * job["face_px"]))
        out[y0:y1, x0:x1] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        return out


def folds(grid: np.ndarray, step: float, inside: np.ndarray) -> bool:
    """Whether a backward map sampled every `step` px (`grid` [ny, nx, 2]) folds over itself in the cells
    where `inside` [ny, nx] holds: its Jacobian determinant (the area ratio) is negative there."""
    dx = (grid[:-1, 1:] - grid[:-1, :-1]) / step
    dy = (grid[1:, :-1] - grid[:-1, :-1]) / step
    det = dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0]
    cells = inside[:-1, :-1] & inside[1:, 1:]
    return bool(cells.any() and det[cells].min() < 0.0)


def two_band(top: np.ndarray, base: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """`top` over `base` [h, w, 3] float32: their coarse colour and light blended by `weight` [h, w], their
    fine detail (below `sigma_px`) switched by a much steeper version of it, so the feather never averages
    two unrelated textures into a blur."""
    low_t = cv2.GaussianBlur(top, (0, 0), sigma_px)
    low_b = cv2.GaussianBlur(base, (0, 0), sigma_px)
    sharp = np.clip((weight - 0.5) * 4.0 + 0.5, 0.0, 1.0)[..., None]
    w = weight[..., None]
    return low_b + (low_t - low_b) * w + (base - low_b) + ((top - low_t) - (base - low_b)) * sharp


def mouth_region(target: np.ndarray, moved: np.ndarray, work: tuple[int, int, int, int], margin: float
                 ) -> np.ndarray:
    """[h, w] float32 weight of the mouth and the skin around it: the target's and the warped frame's outer
    lips, grown by `margin` × the mouth width and feathered over as much again."""
    x0, y0, x1, y1 = work
    region = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for pts in (target, moved):
        cv2.fillPoly(region, [(pts[L.LIPS_OUTER] - (x0, y0)).astype(np.int32)], 1)
    width = float(np.ptp(target[L.LIPS_OUTER, 0]))
    k = max(3, int(margin * width) | 1)
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    soft = region.astype(np.float32)
    return cv2.GaussianBlur(soft, (0, 0), max(1.0, margin * width / 2))


def skin_around(target: np.ndarray, moved: np.ndarray, work: tuple[int, int, int, int], face_px: float
                ) -> np.ndarray:
    """[h, w] float32: the lower face without the lips (the target's and the warped frame's, grown)."""
    x0, y0, x1, y1 = work
    skin = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(skin, [(paste.lower_face_polygon(moved) - (x0, y0)).astype(np.int32)], 1)
    lips = np.zeros_like(skin)
    for pts in (target, moved):
        cv2.fillPoly(lips, [(pts[L.LIPS_OUTER] - (x0, y0)).astype(np.int32)], 1)
    k = max(3, int(0.06 * face_px) | 1)
    lips = cv2.dilate(lips, np.ones((k, k), np.uint8))
    return (skin & (1 - lips)).astype(np.float32)


def local_gain(mouth: np.ndarray, frame: np.ndarray, skin: np.ndarray, sigma_px: float) -> np.ndarray:
    """[h, w, 3] per-pixel colour gain taking the mouth image's local means over `skin` onto the frame's,
    computed at low resolution (it is smooth) and interpolated over the lips from the skin around them."""
    h, w = skin.shape
    f = min(1.0, 48.0 / max(h, w))
    size = (max(2, round(w * f)), max(2, round(h * f)))
    m = cv2.resize(skin, size, interpolation=cv2.INTER_AREA)[..., None]
    a = cv2.resize(mouth, size, interpolation=cv2.INTER_AREA).astype(np.float32) * m
    b = cv2.resize(frame, size, interpolation=cv2.INTER_AREA).astype(np.float32) * m
    sig = max(sigma_px * f, 0.5)
    den = cv2.GaussianBlur(m[..., 0], (0, 0), sig)[..., None]
    num_a = cv2.GaussianBlur(a, (0, 0), sig)
    num_b = cv2.GaussianBlur(b, (0, 0), sig)
    ok = den > 1e-3
    gain = np.where(ok, (num_b + 1.0) / (num_a + 1.0), 1.0)
    gain = np.clip(gain, 1 / MAX_GAIN, MAX_GAIN).astype(np.float32)
    return cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)
