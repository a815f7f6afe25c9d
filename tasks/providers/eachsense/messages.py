"""The words sent to each::sense for each use case, and reading conventions back from words.

The service is a chat agent: what it returns depends on what it is asked. Each message names
the use case's priorities and always fixes the output convention (a single-channel grayscale
PNG at the input's resolution, white = near), so that the provider can read the answer without
guessing. A recipe's own ``message`` replaces the use-case wording; the provider then still
reads the convention the message asks for (``black = near`` / ``inverse`` flips the map).
"""

from __future__ import annotations

import re

RELATIVE_FORMAT = ("Return a single-channel grayscale PNG at the same resolution as the input image, "
                   "with relative depth normalised to 0-1 where white = near and black = far.")
METRIC_FORMAT = ("Return metric depth in meters (larger = farther) at the same resolution as the input "
                 "image, as a 32-bit float TIFF, or as a 16-bit PNG in millimeters.")

USE_CASES = {
    "general": "Estimate a depth map for this photo.",
    "portrait": ("Estimate a depth map for this portrait. Keep clean, accurate edges around the person's "
                 "hair, face and shoulders, and separate the person clearly from the background."),
    "landscape": ("Estimate a depth map for this landscape photo. Keep the gradual depth from the "
                  "foreground to the horizon; the sky is the farthest region."),
    "product": ("Estimate a depth map for this product photo. Separate the product crisply from its "
                "background and keep its surfaces smooth."),
    "interior": ("Estimate a depth map for this interior photo. Keep walls, floor, ceiling and furniture "
                 "planar and consistent, with sharp boundaries between objects."),
    "parallax": ("Estimate a depth map for a 2.5D parallax animation of this photo: smooth surfaces, "
                 "sharp object boundaries without halos, and a clear separation of foreground and background."),
    "vr": ("Estimate metric depth for this photo for VR/AR placement: distances in meters, consistent "
           "scale across the scene."),
    "stereo": ("Estimate a depth map for converting this photo to a stereo 3D pair: consistent depth "
               "across surfaces and sharp, well-aligned object edges."),
    "focus_planes": ("Estimate a depth map for choosing focus planes in this photo: distinct depth layers "
                     "for the subject, the middle ground and the background."),
    "background_blur": ("Estimate a depth map for a background-blur (bokeh) effect on this photo: a precise "
                        "subject boundary, including fine details such as hair, and a smooth background."),
}

REFINE_DEFAULT = ("Enhance the edges around the main subject in the depth map: align depth "
                  "discontinuities with the object boundaries of the photo and remove halos, keeping "
                  "the rest unchanged.")
REFINE_WITH_DEPTH = ("The first image is the photo, the second image is its current depth map "
                     "(white = near).")


def estimate_message(use_case: str | None, output: str = "relative", override: str | None = None) -> str:
    """The message for an estimate: the recipe's own words, or the use case's wording + format."""
    if override and override.strip():
        return override.strip()
    uc = use_case if use_case in USE_CASES else "general"
    fmt = METRIC_FORMAT if output == "metric" or uc == "vr" else RELATIVE_FORMAT
    return f"{USE_CASES[uc]} {fmt}"


def refine_message(override: str | None, *, with_depth: bool, output: str = "relative") -> str:
    """The message for a refinement turn in the same session."""
    text = (override or "").strip() or REFINE_DEFAULT
    parts = [text]
    if with_depth:
        parts.append(REFINE_WITH_DEPTH)
    if not override or not override.strip():
        parts.append(METRIC_FORMAT if output == "metric" else RELATIVE_FORMAT)
    return " ".join(parts)


_BLACK_NEAR = re.compile(
    r"(black|dark(er)?)\s*(=|is|are|represents?|means?|for)\s*(the\s+)?(near|nearer|close|closer|closest|nearest)"
    r"|(near|close)(er|est)?\s*(=|is|are)\s*(black|dark(er)?)"
    r"|\binvers(e|ed)\b\s*(grayscale|greyscale|gray|grey|map|depth map)?"
    r"|\binverted\b", re.IGNORECASE)
_WHITE_NEAR = re.compile(
    r"(white|bright(er)?)\s*(=|is|are|represents?|means?|for)\s*(the\s+)?(near|nearer|close|closer|closest|nearest)"
    r"|(near|close)(er|est)?\s*(=|is|are)\s*(white|bright(er)?)", re.IGNORECASE)
_MILLIMETERS = re.compile(r"millimet(er|re)s?|\bmm\b", re.IGNORECASE)
_METERS = re.compile(r"\bmet(er|re)s?\b|\bmetric\b", re.IGNORECASE)


def says_black_near(text: str | None) -> bool:
    """Does the text state (or ask for) the black = near convention (and not white = near)?"""
    return bool(text) and bool(_BLACK_NEAR.search(text)) and not _WHITE_NEAR.search(text)


def says_white_near(text: str | None) -> bool:
    return bool(text) and bool(_WHITE_NEAR.search(text)) and not _BLACK_NEAR.search(text)


def says_millimeters(text: str | None) -> bool:
    return bool(text) and bool(_MILLIMETERS.search(text))


def says_meters(text: str | None) -> bool:
    return bool(text) and bool(_METERS.search(text))
