"""Weight-free object tracker: the source object crop is searched in every frame by masked normalised
cross-correlation (NCC) over positions (FFT, whole frame, also partly outside it) and anisotropic
scales (local search around the previous frame's scale). Works on RGB frames or latents alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Progress = Callable[[int, int], None]


@dataclass
class TrackResult:
    """Per-frame boxes ``[T, 4]`` (normalised, may extend outside the frame), NCC ``scores`` ``[T]`` and
    ``found`` ``[T]`` (score above the threshold with enough of the template inside the frame)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    found: torch.Tensor


def work_size_for(boxes: torch.Tensor, height: int, width: int, base: int = 128, min_px: float = 20.0) -> int:
    """Tracking resolution (longer side): ``base``, raised so the smallest box side of ``boxes`` ``[..., 4]``
    stays at least ``min_px`` working pixels (never above the frame size)."""
    b = boxes.reshape(-1, 4).double()
    side = torch.minimum((b[:, 2] - b[:, 0]) * width, (b[:, 3] - b[:, 1]) * height).clamp(min=1e-6)
    need = math.ceil(min_px / float(side.min()) * max(height, width))
    return int(min(max(height, width), max(base, need)))


def crop_box(image: torch.Tensor, box: torch.Tensor | tuple, out_h: int, out_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``box`` (normalised) of ``image`` ``[C, H, W]`` to ``[C, out_h, out_w]``; also return the
    coverage ``[out_h, out_w]`` (0 outside the image). Downscaling is pre-filtered."""
    C, H, W = image.shape
    b = torch.as_tensor(box, dtype=torch.float64)
    bw, bh = float(b[2] - b[0]) * W, float(b[3] - b[1]) * H
    src = torch.cat([image, torch.ones_like(image[:1])], 0)[None]
    # pre-filter by integer pooling when the crop is much smaller than the box
    f = int(max(1, math.floor(min(bw / max(out_w, 1), bh / max(out_h, 1)))))
    if f > 1:
        src = F.avg_pool2d(src, f, ceil_mode=True)
    xs = b[0] + (b[2] - b[0]) * (torch.arange(out_w, dtype=torch.float64) + 0.5) / out_w
    ys = b[1] + (b[3] - b[1]) * (torch.arange(out_h, dtype=torch.float64) + 0.5) / out_h
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None] * 2 - 1
    s = F.grid_sample(src.to(image.dtype), grid.to(image.dtype), mode="bilinear", padding_mode="zeros",
                      align_corners=False)[0]
    cov = s[-1].clamp(0, 1)
    return s[:-1] / cov.clamp(min=1e-6), cov


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _ncc_batch(frame: torch.Tensor, templates: list[tuple[torch.Tensor, torch.Tensor]], y0: int, x0: int,
               ah: int, aw: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Masked NCC of each template ``[C, kh, kw]`` (with pixel weights ``[kh, kw]``) at every top-left
    position inside the frame region ``[y0, y0+ah) x [x0, x0+aw)`` (which may extend outside the frame:
    only pixels inside the frame count). Returns per template the NCC map ``[ah-kh+1, aw-kw+1]`` and the
    visible weight fraction. One FFT of the region serves all templates."""
    C, H, W = frame.shape
    A = torch.zeros(1 + 2 * C, ah, aw, dtype=torch.float64)
    ya, yb = max(0, y0), min(H, y0 + ah)
    xa, xb = max(0, x0), min(W, x0 + aw)
    if ya < yb and xa < xb:
        I = frame[:, ya:yb, xa:xb].double()
        A[0, ya - y0:yb - y0, xa - x0:xb - x0] = 1
        A[1:1 + C, ya - y0:yb - y0, xa - x0:xb - x0] = I
        A[1 + C:, ya - y0:yb - y0, xa - x0:xb - x0] = I * I
    s = (_fast_len(ah), _fast_len(aw))
    FA = torch.fft.rfft2(A, s=s)
    K = torch.zeros(len(templates), 1 + 2 * C, ah, aw, dtype=torch.float64)
    for m, (tm, wt) in enumerate(templates):
        kh, kw = tm.shape[-2:]
        Wt = wt.double()[None]
        T = tm.double()
        K[m, :, :kh, :kw] = torch.cat([Wt, Wt * T, Wt * T * T], 0)
    FK = torch.fft.rfft2(K, s=s).conj()
    FV, FIV, FI2V = FA[0], FA[1:1 + C], FA[1 + C:]
    FW, FWT, FWT2 = FK[:, :1], FK[:, 1:1 + C], FK[:, 1 + C:]
    spec = torch.cat([
        FV * FW,                                  # n
        FIV * FW,                                 # S_I per channel
        FV * FWT,                                 # S_T per channel
        (FI2V * FW).sum(1, keepdim=True),         # sum S_II
        (FV * FWT2).sum(1, keepdim=True),         # sum S_TT
        (FIV * FWT).sum(1, keepdim=True),         # sum S_IT
    ], 1)
    out = torch.fft.irfft2(spec, s=s)
    res = []
    for m, (tm, wt) in enumerate(templates):
        kh, kw = tm.shape[-2:]
        o = out[m, :, : ah - kh + 1, : aw - kw + 1]
        n = o[0].clamp(min=1e-9)
        SI, ST = o[1:1 + C], o[1 + C:1 + 2 * C]
        SII, STT, SIT = o[1 + 2 * C], o[2 + 2 * C], o[3 + 2 * C]
        cov = SIT - (SI * ST).sum(0) / n
        vi = (SII - (SI * SI).sum(0) / n).clamp(min=0)
        vt = (STT - (ST * ST).sum(0) / n).clamp(min=0)
        total = float(wt.sum())
        ncc = (cov / (vi * vt + 1e-10 * total * total).sqrt()).clamp(-1, 1)
        res.append((ncc, n / max(total, 1e-9)))
    return res


def objectness(source: torch.Tensor, box: torch.Tensor, crop: torch.Tensor, floor: float = 0.03) -> torch.Tensor:
    """Weights ``[h, w]`` for a crop of ``box``: how unlike the ring of pixels around the box each crop pixel
    is (1 = surely object, ``floor`` = looks like the surrounding background). Uniform when the object
    cannot be told from its surroundings this way."""
    C, H, W = source.shape
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    x0, x1 = int(max(0, math.floor((float(box[0]) - 0.25 * bw) * W))), int(min(W, math.ceil((float(box[2]) + 0.25 * bw) * W)))
    y0, y1 = int(max(0, math.floor((float(box[1]) - 0.25 * bh) * H))), int(min(H, math.ceil((float(box[3]) + 0.25 * bh) * H)))
    ys = torch.arange(y0, y1)[:, None].float() + 0.5
    xs = torch.arange(x0, x1)[None].float() + 0.5
    inside = ((xs >= float(box[0]) * W) & (xs <= float(box[2]) * W) & (ys >= float(box[1]) * H) & (ys <= float(box[3]) * H))
    ring = source[:, y0:y1, x0:x1][:, ~inside].T  # [n, C]
    if ring.shape[0] < 8:
        return torch.ones(crop.shape[-2:])
    g = torch.Generator().manual_seed(0)
    if ring.shape[0] > 1024:
        ring = ring[torch.randperm(ring.shape[0], generator=g)[:1024]]
    scale = source.flatten(1).std(1).clamp(min=1e-6)
    px = (crop.flatten(1).T / scale)
    d = torch.cdist(px.double(), (ring / scale).double()).min(1).values.reshape(crop.shape[-2:])
    rd = torch.cdist((ring / scale).double(), (ring / scale).double())
    rd.fill_diagonal_(float("inf"))
    tau = 3 * float(rd.min(1).values.median()) + 0.1
    w = (d / tau).clamp(0, 1)
    if float(w.mean()) < 0.15:
        return torch.ones(crop.shape[-2:])
    # objects sit in the middle of their boxes: fade weights towards the corners (other things)
    h, wd = crop.shape[-2:]
    yy = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    xx = (torch.arange(wd, dtype=torch.float64) + 0.5) / wd * 2 - 1
    bump = torch.exp(-(yy[:, None] ** 2 + xx[None] ** 2) / (2 * 0.6 ** 2))
    return (w * bump).clamp(min=floor).float()


def _subpixel(m: torch.Tensor, y: int, x: int) -> tuple[float, float]:
    def off(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d >= 0 else max(-0.5, min(0.5, 0.5 * (a - c) / d))
    dy = off(float(m[y - 1, x]), float(m[y, x]), float(m[y + 1, x])) if 0 < y < m.shape[0] - 1 else 0.0
    dx = off(float(m[y, x - 1]), float(m[y, x]), float(m[y, x + 1])) if 0 < x < m.shape[1] - 1 else 0.0
    return y + dy, x + dx


def track_template(video: torch.Tensor, source: torch.Tensor, source_box: torch.Tensor | tuple,
                   work_size: int = 128, scale_step: float = 1.12, min_visible: float = 0.3,
                   min_score: float = 0.4, motion_prior: float = 0.1, max_scale: float = 6.0,
                   max_aspect_change: float = 3.0, shape_prior: float = 0.1, object_weights: bool = True,
                   progress: Progress | None = None) -> TrackResult:
    """Track the ``source_box`` crop of ``source`` ``[C, H, W]`` through ``video`` ``[T, C, H, W]``.

    Frames are worked at a longer side of at most ``work_size`` px. Each frame: (1) NCC over positions
    near the position predicted from the last motion, at the last scale (over the whole frame if
    nothing there scores ``min_score``); (2) a local 3x3 search over (x, y) scales with small position
    windows, moved to the best until the centre wins, with steps ``scale_step``, its square root, ...
    ``motion_prior`` subtracts that much NCC per frame diagonal of distance from the predicted centre.
    ``shape_prior`` subtracts that much NCC per unit of log aspect-ratio change from the last frame.
    With ``object_weights`` template pixels that look like the ring around the source box (background
    inside a loose box) count less, so a changed background behind the object does not derail the track.
    """
    T, C, H, W = video.shape
    f = min(1.0, work_size / max(H, W))
    Hw, Ww = max(4, round(H * f)), max(4, round(W * f))
    if (Hw, Ww) != (H, W):
        video = F.interpolate(video.float(), size=(Hw, Ww), mode="bilinear", antialias=True, align_corners=False)
        source = F.interpolate(source.float()[None], size=(Hw, Ww), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    sb = torch.as_tensor(source_box, dtype=torch.float64)
    th0 = max(3.0, float(sb[3] - sb[1]) * Hw)
    tw0 = max(3.0, float(sb[2] - sb[0]) * Ww)
    ref_h, ref_w = max(3, round(th0 * 2)), max(3, round(tw0 * 2))
    ref, ref_cov = crop_box(source.float(), sb, ref_h, ref_w)
    # object weights need a template big enough to tell object from background; tiny ones use every pixel
    use_w = object_weights and min(th0, tw0) >= 12
    ref_w8 = objectness(source.float(), sb, ref) if use_w else torch.ones(ref_h, ref_w)
    diag = math.hypot(Hw, Ww)
    kmax = int(max(Hw, Ww) * 2)
    templates: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def template(kh: int, kw: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (kh, kw) not in templates:
            t = F.interpolate(ref[None], size=(kh, kw), mode="bilinear", antialias=True, align_corners=False)[0]
            c = F.interpolate(ref_cov[None, None], size=(kh, kw), mode="bilinear", antialias=True,
                              align_corners=False)[0, 0]
            o = F.interpolate(ref_w8[None, None], size=(kh, kw), mode="bilinear", antialias=True,
                              align_corners=False)[0, 0]
            templates[(kh, kw)] = (t, (c > 0.5).float() * o)
        return templates[(kh, kw)]

    def size(sx_: float, sy_: float) -> tuple[int, int]:
        return (int(min(kmax, max(3, round(th0 * sy_)))), int(min(kmax, max(3, round(tw0 * sx_)))))

    boxes = torch.zeros(T, 4, dtype=torch.float64)
    scores = torch.zeros(T, dtype=torch.float64)
    found = torch.zeros(T, dtype=torch.bool)
    sx, sy = 1.0, 1.0
    centre = ((float(sb[0] + sb[2]) / 2) * Ww, (float(sb[1] + sb[3]) / 2) * Hw)
    vel = (0.0, 0.0)
    for t in range(T):
        frame = video[t].double()
        pred = (centre[0] + vel[0], centre[1] + vel[1])

        def search(keys: list[tuple[int, int]], c: tuple[float, float],
                   radius: float) -> list[tuple[float, float, float, float]]:
            """Best (objective, ncc, centre x, centre y) per template size, centres near ``c``."""
            khm, kwm = max(k[0] for k in keys), max(k[1] for k in keys)
            r = int(math.ceil(radius))
            y0 = max(int(math.floor(c[1] - khm / 2)) - r, -khm + 1)
            x0 = max(int(math.floor(c[0] - kwm / 2)) - r, -kwm + 1)
            ah = max(khm, min(khm + 2 * r + 1, Hw + khm - 1 - y0))
            aw = max(kwm, min(kwm + 2 * r + 1, Ww + kwm - 1 - x0))
            out = []
            for (kh, kw), (ncc, vis) in zip(keys, _ncc_batch(frame, [template(*k) for k in keys], y0, x0, ah, aw)):
                ncc = torch.where(vis >= min_visible, ncc, torch.full_like(ncc, -2.0))
                cy = torch.arange(ncc.shape[0], dtype=torch.float64)[:, None] + y0 + kh / 2
                cx = torch.arange(ncc.shape[1], dtype=torch.float64)[None] + x0 + kw / 2
                dist = ((cy - pred[1]) ** 2 + (cx - pred[0]) ** 2).sqrt() / diag
                obj = ncc - motion_prior * dist
                idx = int(obj.flatten().argmax())
                y, x = divmod(idx, obj.shape[1])
                yf, xf = _subpixel(ncc, y, x)
                pen = shape_prior * abs(math.log((kw / kh) / aspect))
                out.append((float(obj[y, x]) - pen, float(ncc[y, x]), xf + x0 + kw / 2, yf + y0 + kh / 2))
            return out

        # (1) position at the current scale near the prediction; whole frame if nothing is found there
        key0 = size(sx, sy)
        aspect = key0[1] / key0[0]
        radius = max(4.0, 0.75 * max(key0), math.hypot(*vel) * 2) if t else max(8.0, 0.25 * diag)
        best = search([key0], pred, radius)[0]
        if best[1] < min_score:
            whole = search([key0], (Ww / 2, Hw / 2), max(Hw + key0[0], Ww + key0[1]) / 2 + 1)[0]
            if whole[0] > best[0]:
                best = whole
        cur = (sx, sy)
        results = {key0: best}
        # (2) anisotropic scale search (3x3 grid, batched) with small position windows
        step = 1.25 if t == 0 else scale_step
        while step > 1.03:
            for _ in range(30):
                cands = {}
                for i in (-1, 0, 1):
                    for j in (-1, 0, 1):
                        cand = (cur[0] * step ** i, cur[1] * step ** j)
                        if (1 / max_scale <= cand[0] <= max_scale and 1 / max_scale <= cand[1] <= max_scale
                                and 1 / max_aspect_change <= cand[0] / cand[1] <= max_aspect_change):
                            cands.setdefault(size(*cand), cand)
                new = [k for k in cands if k not in results]
                if new:
                    rad = max(2.0, 0.15 * max(max(k) for k in new))
                    for k, r in zip(new, search(new, (best[2], best[3]), rad)):
                        results[k] = r
                k_best = max(cands, key=lambda k: results[k][0])
                if results[k_best][0] > best[0] + 1e-9:
                    best, cur = results[k_best], cands[k_best]
                else:
                    break
            step = math.sqrt(step)
        _, score, xc, yc = best
        kh, kw = size(*cur)
        boxes[t] = torch.tensor([(xc - kw / 2) / Ww, (yc - kh / 2) / Hw, (xc + kw / 2) / Ww, (yc + kh / 2) / Hw])
        scores[t] = score
        found[t] = score >= min_score
        if found[t]:
            if t:
                vel = (0.5 * vel[0] + 0.5 * (xc - centre[0]), 0.5 * vel[1] + 0.5 * (yc - centre[1]))
            sx, sy = cur
            centre = (xc, yc)
        if progress is not None:
            progress(t + 1, T)
    return TrackResult(boxes.float(), scores.float(), found)
