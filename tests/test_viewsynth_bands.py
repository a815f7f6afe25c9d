"""The stereo warp's row bands and batches change no pixel: the soft rows', the column
stretch's and the row lean's parallel work (tasks/lib/viewsynth/shift.py) gives what one pass over the whole photo
gives, for any number of threads, any band and batch size."""

from __future__ import annotations

import numpy as np
import pytest

from depthcraft.tasks.lib import viewsynth as V
from depthcraft.tasks.lib.viewsynth import shift as SH


def _depths(rng, h, w):
    y, x = np.mgrid[0:h, 0:w]
    noise = rng.uniform(0, 12, (h, w)).astype(np.float32)
    checker = np.where(((y // 5) + (x // 7)) % 2 == 0, 9.0, 0.0).astype(np.float32)
    blocks = (x * 0.02).astype(np.float32)
    blocks[20:70, 30:90] = 8.0
    blocks[90:130, 10:40] = 5.0
    return {"noise": noise, "checker": checker, "blocks": blocks}


@pytest.mark.parametrize("interp", ["cubic", "lanczos", "linear"])
def test_bands_and_batches_change_no_pixel(monkeypatch, interp):
    rng = np.random.default_rng(4)
    h, w = 150, 120
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for name, d in _depths(rng, h, w).items():
        for direction in (-1, 1):
            monkeypatch.setenv("DEPTHCRAFT_THREADS", "1")
            monkeypatch.setattr(SH, "SOFT_ROWS_BATCH", 10**9)  # one batch, one band of all rows
            monkeypatch.setattr(SH, "COLUMN_BAND_HOLES", 10**9)
            monkeypatch.setattr(SH, "LEAN_RUNS", 10**9)  # the row lean's runs in one chunk
            whole = V.shift_view(img, d, direction=direction, interpolation=interp)
            monkeypatch.setenv("DEPTHCRAFT_THREADS", "3")
            monkeypatch.setattr(SH, "SOFT_ROWS_BATCH", 5)  # a batch per band, 16-row bands
            monkeypatch.setattr(SH, "COLUMN_BAND_HOLES", 1)
            monkeypatch.setattr(SH, "LEAN_RUNS", 3)
            banded = V.shift_view(img, d, direction=direction, interpolation=interp)
            assert whole.filled.any(), name
            for k in ("image", "filled", "disparity"):
                assert np.array_equal(getattr(whole, k), getattr(banded, k)), (name, direction, k)
