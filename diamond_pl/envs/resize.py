"""Frame resizing by area interpolation, in exact integer arithmetic (what cv2's INTER_AREA computes when downscaling).

Used by every real env: Atari's 210x160 screens and any gymnasium env's images go to the configured square size.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["area_resize", "area_resize_weights", "resize_frame"]


@lru_cache(maxsize=None)
def area_resize_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-interpolation weights from ``src`` pixels to ``dst`` cells, as integers.

    Cell d covers ``[d*src/dst, (d+1)*src/dst)``; the weight of source pixel s in cell d is ``overlap * dst / src``.
    Overlaps are multiples of ``1/dst``, so ``src * weight`` is an integer: returns ``(index, numer)``, int64 and
    int32 (dst, K) (K = most pixels a cell touches, padded with index 0 / weight 0); ``numer`` rows sum to ``src``.
    """
    if not 0 < dst <= src:
        raise ValueError(f"area resize only downsamples: got {src} -> {dst}")
    scale = Fraction(src, dst)
    cells: list[list[tuple[int, int]]] = []
    for d in range(dst):
        lo, hi = d * scale, (d + 1) * scale
        cell = []
        for s in range(int(lo), min(src, -(-hi.numerator // hi.denominator))):
            overlap = min(hi, Fraction(s + 1)) - max(lo, Fraction(s))
            if overlap > 0:
                numer = overlap * dst
                assert numer.denominator == 1
                cell.append((s, int(numer)))
        cells.append(cell)
    k = max(len(c) for c in cells)
    index = np.zeros((dst, k), dtype=np.int64)
    numer = np.zeros((dst, k), dtype=np.int32)
    for d, cell in enumerate(cells):
        for j, (s, w) in enumerate(cell):
            index[d, j], numer[d, j] = s, w
    assert (numer.sum(1) == src).all()
    index.setflags(write=False)
    numer.setflags(write=False)
    return index, numer


def area_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (C, size, size) uint8 by area interpolation, in exact integer arithmetic.

    Each output value is the area-weighted mean of the source pixels its cell covers, rounded to nearest. This is
    what ``cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)`` computes (in float32) when downscaling.
    For 210x160 -> 64x64 the exact mean is a multiple of 1/525, never a tie and at least 1/1050 away from a
    rounding boundary, far more than float32's accumulated error, so the results are identical (checked against the
    reference's frames, 0 difference). For other sizes exact ties (x.5) round up, where cv2's float error decides.
    """
    h, w, c = frame.shape
    yi, yw = area_resize_weights(h, size)
    xi, xw = area_resize_weights(w, size)
    x = frame.reshape(h, w * c).astype(np.int32)  # sums stay below 255 * 210 * 160 < 2**31
    rows = x[yi[:, 0]] * yw[:, 0, None]
    for k in range(1, yi.shape[1]):
        rows += x[yi[:, k]] * yw[:, k, None]
    cols = rows.reshape(size, w, c).transpose(1, 0, 2).reshape(w, size * c)  # (W, size*C), scaled by h
    acc = cols[xi[:, 0]] * xw[:, 0, None]
    for k in range(1, xi.shape[1]):
        acc += cols[xi[:, k]] * xw[:, k, None]  # (size_x, size_y*C), scaled by h*w
    denom = h * w
    out = (2 * acc + denom) // (2 * denom)
    return np.ascontiguousarray(out.astype(np.uint8).reshape(size, size, c).transpose(2, 1, 0))


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """Any image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float in [0, 1] / [0, 255] -> uint8 (3, size, size).

    Grey images are repeated to 3 channels and an alpha channel is dropped, so every env gives the networks RGB.
    Downscaling is area interpolation; a side smaller than `size` is first enlarged by repeating pixels (nearest),
    so that small grid worlds keep sharp cells.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {frame.shape}")
    if frame.dtype != np.uint8:
        scale = 255.0 if float(np.max(frame, initial=0)) <= 1.0 else 1.0
        frame = np.clip(np.rint(frame.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    frame = frame[:, :, :3] if frame.shape[2] == 4 else frame
    frame = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame
    h, w = frame.shape[:2]
    up_h, up_w = -(-size // h), -(-size // w)  # integer factors that bring each side to at least `size`
    if up_h > 1 or up_w > 1:
        frame = np.repeat(np.repeat(frame, up_h, axis=0), up_w, axis=1)
    return area_resize(np.ascontiguousarray(frame), size)
