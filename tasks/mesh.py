"""3D export: a coloured point cloud (PLY) or a textured mesh (GLB, OBJ) from photo + depth + field of view.

The photo is seen through a pinhole camera (``depthcraft.tasks.lib.depthmap.intrinsics``: horizontal field of
view, principal point at the centre); each sampled pixel is back-projected to its z-depth.
Files use the glTF axes: x right, y up, the camera at the origin looking down -z, units meters
(or "relative units" when the map has no metric scale). A mesh is the pixel grid (every
``stride`` pixels), two triangles per cell, and a triangle whose vertices differ in depth by
more than ``1 + edge_cut`` times is cut: at a depth edge a foreground and the background stay
apart instead of being joined by a stretched curtain.

Writers are our own, small and dependency-free (GLB per the glTF 2.0 specification, PLY binary
little-endian, OBJ with per-vertex colours so that the file needs no companion texture); the
tests open the files with trimesh.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from .lib.depthmap import DepthMap, back_project, intrinsics, to_metric
from .lib.errors import ParameterError
from .lib.formats import MetricScale, metric_of
from .lib.step import Output, StepContext, StepParams, StepSpec

DEFAULT_FOV = 60.0


@dataclass
class Mesh:
    """Triangles in glTF axes. ``vertices`` float32 Nx3, ``faces`` int32 Mx3 (counter-clockwise
    seen from the camera), ``uv`` float32 Nx2 (glTF convention: 0,0 = top left of the photo),
    ``colors`` uint8 Nx3 (the photo at each vertex)."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    colors: np.ndarray


def depth_in_meters(dm: DepthMap, scale: MetricScale | None = None, far_ratio: float = 3.0) -> np.ndarray:
    """z-depth (larger = farther) for back-projection.

    A metric map or a given scale gives meters; otherwise relative inverse depth is placed
    between 1 and ``far_ratio`` relative units (the shape is right up to scale, the depth
    range is a guess).
    """
    if dm.kind == "metric" or (scale is not None and scale.given()):
        return metric_of(dm, scale).data
    if far_ratio <= 1:
        raise ParameterError(f"must be over 1, got {far_ratio}", parameter="far_ratio")
    return to_metric(dm, near_m=1.0, far_m=float(far_ratio)).data


def grid_indices(n: int, stride: int) -> np.ndarray:
    """Sample positions 0, stride, 2 stride... plus the last pixel, so that the grid spans the photo."""
    idx = np.arange(0, n, stride)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def stride_for(width: int, height: int, max_faces: int, *, points: bool = False) -> int:
    """The smallest stride whose grid has at most ``max_faces`` triangles (or points, for a cloud)."""
    def size(s: int) -> int:
        gw, gh = len(grid_indices(width, s)), len(grid_indices(height, s))
        return gw * gh if points else 2 * (gw - 1) * (gh - 1)

    s = max(1, math.floor(math.sqrt((1.0 if points else 2.0) * width * height / max(max_faces, 2))))
    while size(s) > max_faces:
        s += 1
    return s


def _to_gltf_axes(p: np.ndarray) -> np.ndarray:
    """OpenCV camera axes (x right, y down, z forward) to glTF (x right, y up, z backward)."""
    return np.stack([p[..., 0], -p[..., 1], -p[..., 2]], axis=-1).astype(np.float32)


def depth_mesh(z: np.ndarray, rgb: np.ndarray, fov_deg: float, *, stride: int = 1,
               edge_cut: float | None = 0.1) -> Mesh:
    """The pixel-grid mesh of a z-depth map (``float32 H x W``, larger = farther, NaN / <= 0 = no depth).

    ``edge_cut``: a triangle is dropped when max(z) / min(z) over its vertices exceeds
    ``1 + edge_cut`` (None keeps all). Unused vertices are removed.
    """
    h, w = z.shape
    if rgb.shape[:2] != (h, w):
        raise ParameterError(f"photo is {rgb.shape[1]}x{rgb.shape[0]} but depth is {w}x{h}", parameter="depth")
    if stride < 1:
        raise ParameterError(f"must be at least 1, got {stride}", parameter="stride")
    ys, xs = grid_indices(h, stride), grid_indices(w, stride)
    zs = z[np.ix_(ys, xs)].astype(np.float32)
    gh, gw = zs.shape
    valid = np.isfinite(zs) & (zs > 0)
    zs = np.where(valid, zs, 0).astype(np.float32)
    fx, fy, cx, cy = intrinsics(w, h, fov_deg)  # the full photo's camera, sampled at the grid pixels
    pts = np.stack(np.broadcast_arrays(zs * ((xs[None, :] - cx) / fx).astype(np.float32),
                                       zs * ((ys[:, None] - cy) / fy).astype(np.float32), zs), axis=-1)
    i = np.arange(gh * gw).reshape(gh, gw)
    tl, tr, bl, br = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([tl, bl, tr], 1), np.stack([tr, bl, br], 1)])
    zf = zs.ravel()[faces]
    keep = valid.ravel()[faces].all(axis=1)
    if edge_cut is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            keep &= zf.max(axis=1) <= zf.min(axis=1) * (1.0 + edge_cut)
    faces = faces[keep]
    used = np.unique(faces)
    remap = np.full(gh * gw, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    uv = np.stack(np.broadcast_arrays((xs[None, :] + 0.5) / w, (ys[:, None] + 0.5) / h), -1).reshape(-1, 2)
    cols = rgb[np.ix_(ys, xs)].reshape(-1, 3)
    return Mesh(vertices=_to_gltf_axes(pts.reshape(-1, 3)[used]), faces=remap[faces].astype(np.int32),
                uv=uv[used].astype(np.float32), colors=np.ascontiguousarray(cols[used], dtype=np.uint8))


def point_cloud(z: np.ndarray, rgb: np.ndarray, fov_deg: float, *, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Points (float32 Nx3, glTF axes) and their colours (uint8 Nx3) for every sampled pixel with depth."""
    ys, xs = grid_indices(z.shape[0], stride), grid_indices(z.shape[1], stride)
    pts = _to_gltf_axes(back_project(np.where(np.isfinite(z), z, 0), fov_deg)[np.ix_(ys, xs)]).reshape(-1, 3)
    zs = z[np.ix_(ys, xs)].ravel()
    ok = np.isfinite(zs) & (zs > 0)
    return pts[ok], np.ascontiguousarray(rgb[np.ix_(ys, xs)].reshape(-1, 3)[ok], dtype=np.uint8)


# -- writers ---------------------------------------------------------------------------------
def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray, *, comment: str = "") -> Path:
    """Binary little-endian PLY point cloud: float x y z, uchar red green blue."""
    p = Path(path)
    v = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                     ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = points[:, 0], points[:, 1], points[:, 2]
    v["red"], v["green"], v["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    head = ["ply", "format binary_little_endian 1.0"]
    head += [f"comment {line}" for line in comment.splitlines() if line]
    head += [f"element vertex {len(v)}", "property float x", "property float y", "property float z",
             "property uchar red", "property uchar green", "property uchar blue", "end_header"]
    with open(p, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii"))
        f.write(v.tobytes())
    return p


def write_obj(path: str | Path, mesh: Mesh, *, comment: str = "") -> Path:
    """Wavefront OBJ with per-vertex colours (``v x y z r g b``, colours 0..1): one self-contained file."""
    p = Path(path)
    vc = np.hstack([mesh.vertices.astype(np.float64), mesh.colors.astype(np.float64) / 255.0])
    with open(p, "w", encoding="ascii") as f:
        for line in comment.splitlines():
            f.write(f"# {line}\n")
        np.savetxt(f, vc, fmt="v %.6g %.6g %.6g %.4g %.4g %.4g")
        np.savetxt(f, mesh.faces.astype(np.int64) + 1, fmt="f %d %d %d")
    return p


def _pad4(b: bytes, fill: bytes) -> bytes:
    return b + fill * (-len(b) % 4)


def write_glb(path: str | Path, mesh: Mesh, texture: np.ndarray, *, texture_max: int = 4096,
              extras: dict | None = None) -> Path:
    """Binary glTF 2.0: one mesh, the photo as an unlit base-colour texture (JPEG, at most
    ``texture_max`` px a side), positions, texture coordinates and uint32 indices."""
    p = Path(path)
    img = Image.fromarray(texture)
    if max(img.size) > texture_max:
        img.thumbnail((texture_max, texture_max), Image.Resampling.LANCZOS)
    jpg = io.BytesIO()
    img.save(jpg, format="JPEG", quality=92, subsampling=0)  # 4:4:4: sharp colour edges
    v = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    parts = [v.tobytes(), np.ascontiguousarray(mesh.uv, dtype="<f4").tobytes(),
             np.ascontiguousarray(mesh.faces, dtype="<u4").tobytes(), jpg.getvalue()]
    views, blob = [], b""
    for k, part in enumerate(parts):
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(part)}
        if k < 3:
            view["target"] = 34963 if k == 2 else 34962  # ELEMENT_ARRAY_BUFFER / ARRAY_BUFFER
        views.append(view)
        blob += _pad4(part, b"\0")
    n = len(v)
    doc = {
        "asset": {"version": "2.0", "generator": "depthcraft"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "depth"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2,
                                    "material": 0, "mode": 4}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0,
                                                "roughnessFactor": 1.0},
                       "doubleSided": True, "extensions": {"KHR_materials_unlit": {}}}],
        "textures": [{"source": 0, "sampler": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": 3, "mimeType": "image/jpeg"}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3",
             "min": v.min(axis=0).tolist() if n else [0, 0, 0], "max": v.max(axis=0).tolist() if n else [0, 0, 0]},
            {"bufferView": 1, "componentType": 5126, "count": n, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5125, "count": int(mesh.faces.size), "type": "SCALAR"}],
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    if extras:
        doc["asset"]["extras"] = extras
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(js) + 8 + len(blob)
    with open(p, "wb") as f:
        f.write(np.array([0x46546C67, 2, total], "<u4").tobytes())
        f.write(np.array([len(js), 0x4E4F534A], "<u4").tobytes() + js)
        f.write(np.array([len(blob), 0x004E4942], "<u4").tobytes() + blob)
    return p


MeshFormat = Literal["glb", "obj", "ply"]
MESH_SUFFIX = {"glb": ".glb", "obj": ".obj", "ply": ".ply"}


def export_3d(rgb: np.ndarray, dm: DepthMap, path: str | Path, *, fmt: MeshFormat = "glb",
              fov_deg: float | None = None, scale: MetricScale | None = None, far_ratio: float = 3.0,
              max_faces: int = 500_000, stride: int | None = None, edge_cut: float | None = 0.1,
              texture_max: int = 4096, alpha: np.ndarray | None = None) -> tuple[Path, dict]:
    """Write a GLB/OBJ mesh or a PLY point cloud of ``rgb`` (uint8 HxWx3) seen with depth ``dm``.

    ``alpha`` (uint8 H x W, the photo's): a pixel under half opaque has no surface (no vertex,
    no point, no triangle), so a cut-out product is a product, not a wall behind it; the colours
    of the partly transparent pixels left are composited over the stated background (white).

    Returns the path and what was written (counts, stride, field of view, units). The one-shot
    ``depthcraft mesh`` command calls this.
    """
    fov = float(fov_deg or dm.fov_deg or DEFAULT_FOV)
    z = depth_in_meters(dm, scale, far_ratio)
    if alpha is not None:
        from .lib.images import over_background

        if alpha.shape != z.shape:
            raise ParameterError(f"photo is {alpha.shape[1]}x{alpha.shape[0]} but depth is {z.shape[1]}x{z.shape[0]}",
                                 parameter="depth")
        if not (alpha >= 128).any():
            from .lib.errors import InputError

            raise InputError("every pixel of the photo is (mostly) transparent: no surface to make a 3D model of")
        z = np.where(alpha >= 128, z, np.nan).astype(np.float32)
        rgb = over_background(rgb, alpha)
    h, w = z.shape
    s = stride or stride_for(w, h, max_faces, points=fmt == "ply")
    units = "meters" if dm.kind == "metric" or (scale is not None and scale.given()) else "relative"
    info = {"format": fmt, "fov_deg": fov, "stride": s, "units": units, "axes": "x right, y up, camera looks down -z"}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "ply":
        pts, cols = point_cloud(z, rgb, fov, stride=s)
        info["points"] = int(len(pts))
        write_ply(p, pts, cols, comment="depthcraft point cloud\n" + json.dumps(info))
        return p, info
    mesh = depth_mesh(z, rgb, fov, stride=s, edge_cut=edge_cut)
    if len(mesh.faces) == 0:
        nx, ny = len(grid_indices(w, s)), len(grid_indices(h, s))
        if stride and min(nx, ny) < 16:  # (cells that big cross a depth edge: the stride is the cause)
            raise ParameterError(f"no triangle is left: stride {s} samples the {w}x{h} depth on a {nx}x{ny} grid, "
                                 "whose cells all cross a depth edge", parameter="stride",
                                 hint="lower stride, or leave it out: max_faces then chooses it")
        raise ParameterError("no triangle is left: the depth has no valid values or every triangle "
                             "crosses a depth edge", parameter="edge_cut", hint="raise edge_cut, or set it to null")
    info.update(vertices=int(len(mesh.vertices)), faces=int(len(mesh.faces)), edge_cut=edge_cut)
    if fmt == "obj":
        write_obj(p, mesh, comment="depthcraft mesh\n" + json.dumps(info))
    elif fmt == "glb":
        write_glb(p, mesh, rgb, texture_max=texture_max, extras=info)
    else:
        raise ParameterError(f"unknown 3D format {fmt!r}; one of glb, obj, ply", parameter="format")
    return p, info


# -- the mesh step ---------------------------------------------------------------------------
class MeshParams(StepParams):
    format: MeshFormat = Field("glb", description="glb: textured mesh; obj: mesh with vertex colours; ply: point cloud")
    fov_deg: float | None = Field(None, gt=0, lt=180, description="camera horizontal field of view, degrees "
                                  "(default: the depth map's, else 60)")
    metric: MetricScale = Field(default_factory=MetricScale, description="scale in meters for a relative map "
                                "(near/far or a known distance); without it the shape is in relative units")
    far_ratio: float = Field(3.0, gt=1, le=1e6, description="without a metric scale: far/near distance ratio assumed")
    max_faces: int = Field(500_000, ge=2, description="triangle budget (points for ply): picks the sampling stride when stride is unset")
    stride: int | None = Field(None, ge=1, description="sample every n-th pixel (overrides max_faces)")
    edge_cut: float | None = Field(0.1, ge=0, description="cut triangles whose far/near depth ratio exceeds "
                                   "1 + edge_cut (depth edges); null keeps all")
    texture_max: int = Field(4096, ge=64, description="GLB texture: longest side in pixels")


def run(ctx: StepContext, p: MeshParams) -> dict[str, Output]:
    dm = ctx.depth()
    rgb, alpha = ctx.image_alpha()
    path, info = export_3d(rgb, dm, ctx.out("main", MESH_SUFFIX[p.format]), fmt=p.format,
                           fov_deg=p.fov_deg or p.metric.fov_deg, scale=p.metric, far_ratio=p.far_ratio,
                           max_faces=p.max_faces, stride=p.stride, edge_cut=p.edge_cut, texture_max=p.texture_max,
                           alpha=alpha)
    return {"main": Output(path, "pointcloud" if p.format == "ply" else "mesh", info)}


def params_for_output(path) -> dict:
    """``-o x.glb`` / ``x.obj`` / ``x.ply`` picks the format."""
    s = Path(path).suffix.lower().lstrip(".")
    if s not in MESH_SUFFIX:
        raise ParameterError(f"cannot tell a 3D format from {repr(Path(path).suffix) if Path(path).suffix else 'a file without a suffix'}; use .glb, .obj or .ply",
                             parameter="-o")
    return {"format": s}


def main_suffixes(p: MeshParams) -> tuple[str, ...]:
    return (MESH_SUFFIX[p.format],)


def inert(p: MeshParams, given: set) -> list:
    """Parameters with no effect given the others (refused when written: :mod:`.lib.inert`)."""
    from .lib.inert import Inert, metric_scale

    out = metric_scale(["metric"], "metric", known=p.metric.known)  # (only known_x/known_y without known)
    if p.format != "glb":
        out.append(Inert("texture_max", "format", "only a GLB has a texture (obj: vertex colours, ply: points)"))
    if p.format == "ply":
        out.append(Inert("edge_cut", "format", "edge_cut cuts triangles; a point cloud has none"))
    if p.stride is not None:
        out.append(Inert("max_faces", "stride", "max_faces picks the stride when stride is not given"))
    if p.metric.near is not None and p.metric.far is not None:
        out.append(Inert("far_ratio", "metric.far", "far_ratio places a relative map without a metric scale"))
    elif p.metric.known is not None:
        out.append(Inert("far_ratio", "metric.known", "far_ratio places a relative map without a metric scale"))
    if p.fov_deg is not None:
        out.append(Inert("metric.fov_deg", "fov_deg", "fov_deg is the field of view used; give it once"))
    return out


SPEC = StepSpec(kind="mesh", version="3", params=MeshParams, run=run, params_for_output=params_for_output,
                output_params=("format",), main_suffixes=main_suffixes, inert=inert,
                summary="3D export: textured mesh (GLB/OBJ) or point cloud (PLY) from photo, depth and field of view")
