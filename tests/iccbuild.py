"""Small ICC v2 display profiles written byte by byte, for the colour-profile tests.

A matrix/TRC RGB profile (ICC.1:2001-04, section 6.3.1.2) or a grey TRC profile (6.3.1.1),
built from primaries, a white point and a gamma, so that the tests know the truth of every
colour independently of LittleCMS: :func:`truth_srgb` is the textbook conversion (linearise,
matrix to XYZ, Bradford to D50 and back, sRGB matrix, sRGB encoding, IEC 61966-2-1).
"""

from __future__ import annotations

import struct

import numpy as np

D50 = np.array([0.9642, 1.0, 0.8249])
D65_XY = (0.3127, 0.3290)
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
ADOBE_PRIMARIES = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
PROPHOTO_PRIMARIES = ((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001))
D50_XY = (0.3457, 0.3585)

_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def _xyz(xy) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def rgb_to_xyz(primaries, white_xy) -> np.ndarray:
    """The 3x3 matrix linear RGB -> XYZ (white Y = 1) of primaries ``((xr, yr), ...)``."""
    p = np.stack([_xyz(c) for c in primaries], axis=1)
    s = np.linalg.solve(p, _xyz(white_xy))
    return p * s


def bradford(src_white: np.ndarray, dst_white: np.ndarray) -> np.ndarray:
    a = _BRADFORD @ src_white
    b = _BRADFORD @ dst_white
    return np.linalg.inv(_BRADFORD) @ np.diag(b / a) @ _BRADFORD


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz_tag(v) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(c) for c in v)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"


def _desc(text: str) -> bytes:
    a = text.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(a)) + a + struct.pack(">II", 0, 0) + b"\0\0\0" + b"\0" * 67


def _profile(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    body, table, off = b"", b"", 128 + 4 + 12 * len(tags)
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", off + len(body), len(data))
        body += data
    size = off + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr" + space + b"XYZ "
              + struct.pack(">6H", 2026, 11, 30, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8
              + struct.pack(">I", 0) + b"".join(_s15(c) for c in D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def rgb_profile(name: str, primaries, white_xy, gamma: float) -> bytes:
    """An ICC v2 RGB matrix/TRC display profile (colorants Bradford-adapted to D50)."""
    m = bradford(_xyz(white_xy), D50) @ rgb_to_xyz(primaries, white_xy)
    return _profile(b"RGB ", [(b"desc", _desc(name)), (b"wtpt", _xyz_tag(D50)),
                              (b"rXYZ", _xyz_tag(m[:, 0])), (b"gXYZ", _xyz_tag(m[:, 1])), (b"bXYZ", _xyz_tag(m[:, 2])),
                              (b"rTRC", _curve(gamma)), (b"gTRC", _curve(gamma)), (b"bTRC", _curve(gamma)),
                              (b"cprt", b"text" + b"\0" * 4 + b"no copyright, test data\0")])


def gray_profile(name: str, gamma: float) -> bytes:
    """An ICC v2 grey display profile: a D50 neutral whose luminance is ``v ** gamma``."""
    return _profile(b"GRAY", [(b"desc", _desc(name)), (b"wtpt", _xyz_tag(D50)), (b"kTRC", _curve(gamma)),
                              (b"cprt", b"text" + b"\0" * 4 + b"no copyright, test data\0")])


def srgb_encode(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)


def truth_srgb(rgb, primaries, white_xy, gamma: float) -> np.ndarray:
    """sRGB values (float, 0..255) of 8-bit ``rgb`` (... x 3) in the profile of these primaries,
    white and gamma, relative colorimetric (white to white, Bradford), out-of-gamut clipped."""
    g = round(gamma * 256) / 256  # what the profile stores (u8Fixed8)
    lin = np.power(np.asarray(rgb, np.float64) / 255.0, g)
    src = bradford(_xyz(white_xy), D50) @ rgb_to_xyz(primaries, white_xy)
    dst = bradford(_xyz(D65_XY), D50) @ rgb_to_xyz(SRGB_PRIMARIES, D65_XY)
    out = lin @ (np.linalg.inv(dst) @ src).T
    return srgb_encode(out) * 255.0


def truth_gray_srgb(v, gamma: float) -> np.ndarray:
    g = round(gamma * 256) / 256
    return srgb_encode(np.power(np.asarray(v, np.float64) / (65535.0 if np.asarray(v).dtype == np.uint16 else 255.0), g)) * 255.0
