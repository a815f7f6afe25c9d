"""The view-synthesis engine: a photo seen from a moved camera, rendered from its depth.

Stereo views and parallax frames are the same problem, so both go through this package:

1. **Background layer** (computed once per photo, :mod:`.holefill`). Pixels of near objects
   that hide background a moved camera could reveal (a band beside each depth jump, as wide as
   the jump) are inpainted from background pixels only, with a push-pull pyramid (Gortler et
   al., "The Lumigraph", SIGGRAPH 1996). This is a two-layer "layered depth image" (Shade et
   al., SIGGRAPH 1998), the same idea as 3D photo inpainting (Shih et al., CVPR 2020) without
   the network: disocclusions are filled with background that moves with the background, never
   with stretched or smeared foreground, never black.
2. **Visibility** in the new view (:mod:`.raster`). Horizontal shifts (stereo) use an exact row
   rasteriser: each source pixel is a footprint spanning half-way to its neighbours, joined to
   them where the surface is continuous (so stretched surfaces have no cracks), splatted in
   painter's order (for the right view of a rectified pair, of two pixels that land on the same
   spot the one further right is nearer: McMillan, "An image-based approach to 3D computer
   graphics", 1997), at sub-pixel precision. Free camera moves (:class:`Pose`,
   :mod:`.projection`) use a z-buffered forward splat of inverse depth at half resolution,
   refined per pixel (:class:`ParallaxRenderer`, :mod:`.renderer`).
3. **Resampling** by backward warping (``cv2.remap``, bicubic for stereo, :mod:`.shift`): each
   output pixel reads the photo, or the background layer where it is a disocclusion. The near
   side of every depth jump is extended by a pixel (``near_extend``), the peers' "edge
   dilation" that keeps the anti-aliased edge pixels on the near object; ``edge_dilation``
   dilates estimated depth further.

Conventions: images are ``uint8`` RGB ``H x W x 3``; disparity is ``float32`` pixels, larger =
nearer, and a left-view pixel at ``x`` appears in the right view at ``x - d``. The ``filled``
mask of every result marks the pixels that were invented (disocclusions), for users who inpaint
elsewhere.

Modules: ``common`` (defaults, filters, row bands), ``projection`` (camera poses, fitting the
photo to the output), ``raster`` (forward warping: row rasteriser, z-buffer splat),
``holefill`` (background layer, hole depths), ``shift`` (stereo warps), ``renderer``
(parallax frames).
"""

from __future__ import annotations

from .common import (AUTO_CUBIC_PIXELS, FAR_EXTEND, HIDDEN_MARGIN, HIDDEN_SPREAD, INTERP, JUMP_PX,
                     NEAR_EXTEND, by_bands, layer_channels, resolve_interpolation, rgb, threads)
from .holefill import (Layers, _fill_row_holes, _min_fill, _nearest_known, background_layer, edge_far,
                       hidden_mask, make_layers, push_pull_fill)
from .projection import Pose, fit_source, forward_point
from .raster import _row_sources, dilate_near, splat_nearness
from .renderer import ParallaxRenderer
from .shift import View, _row_maps, resample, shift_sources, shift_view

__all__ = [
    "AUTO_CUBIC_PIXELS", "FAR_EXTEND", "HIDDEN_MARGIN", "HIDDEN_SPREAD", "INTERP", "JUMP_PX", "NEAR_EXTEND",
    "Layers", "ParallaxRenderer", "Pose", "View", "background_layer", "by_bands", "dilate_near", "edge_far", "fit_source",
    "forward_point", "hidden_mask", "layer_channels", "make_layers", "push_pull_fill", "resample",
    "resolve_interpolation", "rgb", "shift_sources", "shift_view", "splat_nearness", "threads",
]
