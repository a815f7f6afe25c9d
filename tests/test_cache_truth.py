"""A cached result is the true result, and the manifest tells the truth (hostile report 3).

1. Header bombs: a PNG whose header claims 100000 x 100000 (370 bytes) or 20000 x 20000 of
   zeros (1 MB) is refused by its header and never decoded, not by a step, not by the
   gallery. Every bomb test runs in a child process under RLIMIT_AS, so that a regression
   fails here instead of taking the shared machine's memory.
2. An input changed while a run reads it fails that image in one line; nothing is stored
   under the key its planned bytes gave.
3. The effective pixel limit (DEPTHCRAFT_MAX_PIXELS) keys steps when it decides the working
   size (downscale), and the manifest records it and the working size.
4. Outputs that embed a name (the viewer's default title) carry it in their key.
5. Equal parameters in other spellings (sizes, presets) give one key.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli, save_photo

LIMIT_AS = 3 << 30  # bytes of address space for a child that handles a bomb


# -- bombs -------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def header_bomb(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A PNG of a few hundred bytes whose header claims ``w`` x ``h`` RGB (its data is cut short)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def zero_bomb(path: Path, w: int, h: int) -> Path:
    """A complete, valid PNG of ``w`` x ``h`` black RGB pixels, written row by row (it
    compresses about 1000:1, so a 1 MB file decodes to a gigabyte)."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * w)
    parts = [z.compress(row) for _ in range(h)] + [z.flush()]
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path


def run_limited(code: str, *, env: dict | None = None, timeout: int = 120) -> dict:
    """Run ``code`` in a child under RLIMIT_AS; it prints one JSON line, to which the child's
    peak resident memory (``maxrss_mb``) is added."""
    prog = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({LIMIT_AS}, {LIMIT_AS}))
        import numpy, PIL.Image
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {{}}
    """) + textwrap.dedent(code) + textwrap.dedent("""
        out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["base_mb"] = base / 1024
        print(json.dumps(out))
    """)
    e = {**os.environ, **(env or {})}
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=e, timeout=timeout,
                       cwd=str(REPO))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {"bomb": header_bomb(d / "bomb.png"),
            # 8000 x 8000 = 64 MP of zeros: 192 MB decoded, 190 KB on disk; over a 1 MP limit
            "zbomb": zero_bomb(d / "zbomb.png", 8000, 8000)}


def test_a_header_bomb_is_refused_by_its_header_never_decoded(bombs):
    # PIL's PngImageFile.getexif() decodes every pixel (to find an eXIf chunk after the data):
    # the photo reader called it before its size check, so the 64 MP file was decoded to be refused
    out = run_limited(f"""
        from depthcraft.tasks.lib.images import read_image
        from depthcraft.tasks.lib.errors import InputError
        for name, path in {json.dumps({k: str(v) for k, v in bombs.items()})}.items():
            try:
                read_image(path, max_pixels=1_000_000)
                out[name] = "decoded"
            except InputError as e:
                out[name] = str(e)
    """)
    assert "100000x100000" in out["bomb"] and "over the limit of 1 MP" in out["bomb"], out
    assert "8000x8000" in out["zbomb"] and "over the limit of 1 MP" in out["zbomb"], out
    # decoding the 64 MP file costs 192 MB or more; refusing it by its header costs nothing
    assert out["maxrss_mb"] - out["base_mb"] < 60, out


def test_gallery_thumbnails_keep_to_the_runs_pixel_budget(bombs, tmp_path, photos):
    """The gallery thumbnailed every input with a full decode, whatever its size; now an input
    over the run's limit shows a placeholder, and nothing of it is decoded."""
    good = photos["astronaut"]
    inputs = [{"name": n, "origin": str(p), "sha256": "ab" * 32} for n, p in bombs.items()]
    from depthcraft.tasks.lib.store import sha256_file

    inputs.append({"name": "astronaut", "origin": str(good), "sha256": sha256_file(good)})
    m = {"recipe": {"name": "bombs", "file": None, "sha256": "0" * 64}, "session_id": "s", "provider": {},
         "steps": [], "failures": [], "inputs": inputs, "limits": {"max_pixels": 1_000_000, "downscale": False}}
    out = run_limited(f"""
        from pathlib import Path
        from depthcraft.flows.gallery import write_gallery, thumbnail
        m = json.loads({json.dumps(json.dumps(m))})
        page = Path(write_gallery(m, Path({json.dumps(str(tmp_path / 'g'))}))).read_text()
        out["placeholders"] = page.count("not shown:")
        out["thumbs"] = page.count("_gallery/")
        # a thumbnail asked for directly (the Prefect artifacts ask too) keeps to its budget as well
        h = Path({json.dumps(str(tmp_path / 'h'))})
        out["direct"] = [str(thumbnail(Path({json.dumps(str(bombs["bomb"]))}), h, "cd" * 20)),  # default budget
                         str(thumbnail(Path({json.dumps(str(bombs["zbomb"]))}), h, "ef" * 20, budget=1_000_000))]
    """)
    assert out["placeholders"] == 2, out  # bomb and zbomb: shown as "not shown", never decoded
    assert out["thumbs"] == 1, out  # the good photo still has its thumbnail
    assert out["direct"] == ["None", "None"], out
    assert out["maxrss_mb"] - out["base_mb"] < 100, out


def test_a_batch_with_bombs_finishes_and_its_gallery_shows_placeholders(prefect_server, workspace, tmp_path,
                                                                         photos, bombs):
    """The hostile batch: good photos plus both bombs, ``images: ["bad/*"]``, the real command
    line under an address-space limit: the bombs fail alone by their header, the rest is made."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in [photos["astronaut"], photos["coffee"], *bombs.values()]:
        (bad / p.name).write_bytes(p.read_bytes())
    (tmp_path / "b.yaml").write_text(textwrap.dedent("""\
        version: 1
        name: bombs
        provider: classic
        inputs:
          images: ["bad/*"]
        steps:
          - {id: depth, uses: estimate}
        output: out/{recipe}/{image}/
    """))
    out = run_limited(f"""
        import os, sys
        os.chdir({json.dumps(str(tmp_path))})
        sys.argv = ["depthcraft", "run", "b.yaml", "--json"]
        from depthcraft.flows.cli import main
        out["rc"] = main()
    """, env={"DEPTHCRAFT_MAX_PIXELS": "1000000"}, timeout=300)
    assert out["rc"] == 1, out  # the two bombs failed; the run went on
    page = (tmp_path / "out" / "bombs" / "index.html").read_text()
    assert page.count("not shown:") == 2
    m = json.loads((tmp_path / "out" / "bombs" / "manifest.json").read_text())
    done = {n["image"] for n in m["steps"] if n["status"] in ("computed", "cached")}
    assert done == {"astronaut", "coffee"}
    assert {f["image"] for f in m["failures"]} == {"bomb", "zbomb"}
    assert all("over the limit of 1 MP" in f["error"] for f in m["failures"])
    assert out["maxrss_mb"] - out["base_mb"] < 600, out  # no bomb decoded (64 MP alone is 192 MB, twice)


def gif_bomb(path: Path, w: int = 30000, h: int = 30000) -> Path:
    """A two-frame GIF of 64 x 64 whose screen and frames claim ``w`` x ``h``."""
    from PIL import Image

    fr = [Image.fromarray((np.random.default_rng(i).random((64, 64)) * 255).astype(np.uint8)).convert("P")
          for i in range(2)]
    fr[0].save(path, save_all=True, append_images=fr[1:], duration=100, loop=0)
    b = bytearray(path.read_bytes())
    b[6:10] = struct.pack("<HH", w, h)
    i = b.find(b"\x2c\x00\x00\x00\x00")
    while i >= 0:  # every image descriptor at 0,0
        b[i + 5:i + 9] = struct.pack("<HH", w, h)
        i = b.find(b"\x2c\x00\x00\x00\x00", i + 9)
    path.write_bytes(bytes(b))
    return path


def test_an_animation_bomb_is_refused_by_its_header(tmp_path):
    """Reading a GIF's frame durations decodes each frame (PIL loads a frame to seek past it):
    the size is checked first, from the header, with and without downscale."""
    g = gif_bomb(tmp_path / "g.gif")
    out = run_limited(f"""
        import depthcraft.tasks.lib.images  # as in a run: PIL's own bomb check is off
        from depthcraft.tasks.lib.clip import probe_clip
        for ds in (False, True):
            try:
                probe_clip({json.dumps(str(g))}, max_pixels=1_000_000, downscale=ds)
                out[str(ds)] = "probed"
            except Exception as e:
                out[str(ds)] = str(e)
    """)
    assert "frames are 30000x30000 = 900.0 MP, over the limit of 1 MP" in out["False"], out
    assert "over the decoding budget of 200 MP" in out["True"], out


# -- plans without Prefect ----------------------------------------------------------------------
def plan_of(tmp_path: Path, text: str, **kw):
    from depthcraft.flows.compile import compile_plan
    from depthcraft.flows.recipe import load_recipe
    from depthcraft.flows.workspace import Workspace

    p = tmp_path / "r.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    r, src = load_recipe(p, **kw)
    return compile_plan(r, src, Workspace.default(tmp_path / "ws"), out_root=tmp_path / "out")


def photo_pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    a = save_photo(tmp_path / "photo.png", (rng.random((96, 128, 3)) * 255).astype(np.uint8))
    b = save_photo(tmp_path / "other.png", np.full((96, 128, 3), 200, np.uint8))
    return a, b


def test_a_photo_changed_mid_run_fails_alone_and_stores_nothing_under_its_key(tmp_path, monkeypatch):
    from depthcraft.flows.execute import execute_node
    from depthcraft.flows.runner import _payload
    from depthcraft.flows.workspace import Workspace
    from depthcraft.tasks.lib.errors import InputError

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    photo, other = photo_pair(tmp_path)
    original = photo.read_bytes()
    plan = plan_of(tmp_path, f"""\
        version: 1
        name: swap
        provider: classic
        inputs: {{images: [{json.dumps(str(photo))}]}}
        steps: [{{id: depth, uses: estimate}}]
    """)
    ws = Workspace.default(tmp_path / "ws")
    img = plan.images[0]
    payload = _payload(plan, ws, "depth", img)
    photo.write_bytes(other.read_bytes())  # edited after the plan hashed it, before the step reads it
    with pytest.raises(InputError) as e:
        execute_node(payload, [])
    assert str(e.value).startswith(f"{photo}: changed while the run was reading it; run again"), str(e.value)
    assert ws.store.load_record(payload["key"], what="t") is None  # nothing under the stale key

    photo.write_bytes(original)  # restored: the key's own bytes are computed, not the other photo's
    got = execute_node(payload, [])
    ref = execute_node({**payload, "workspace": str(tmp_path / "ref")}, [])  # the photo's own result, elsewhere
    assert got["outputs"]["depth"]["sha256"] == ref["outputs"]["depth"]["sha256"]


def test_a_given_depth_map_changed_mid_run_is_refused(tmp_path, monkeypatch):
    from depthcraft.flows.execute import execute_node
    from depthcraft.flows.runner import _payload
    from depthcraft.flows.workspace import Workspace
    from depthcraft.tasks.lib.errors import InputError

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    photo, _ = photo_pair(tmp_path)
    d = tmp_path / "d.npy"
    np.save(d, np.linspace(0, 1, 96 * 128, dtype=np.float32).reshape(96, 128))
    plan = plan_of(tmp_path, f"""\
        version: 1
        name: given
        inputs:
          images: [{{image: {json.dumps(str(photo))}, depth: {json.dumps(str(d))}, depth_kind: disparity}}]
        steps: [{{id: depth, uses: estimate}}]
    """)
    ws = Workspace.default(tmp_path / "ws")
    payload = _payload(plan, ws, "depth", plan.images[0])
    np.save(d, np.ones((96, 128), np.float32))
    with pytest.raises(InputError, match="changed while the run was reading it; run again"):
        execute_node(payload, [])
    assert ws.store.load_record(payload["key"], what="t") is None


RECIPE_DS = """\
    version: 1
    name: ds
    provider: classic
    inputs:
      images: [{photo}]
      downscale: {downscale}
    steps: [{{id: depth, uses: estimate}}, {{id: v, uses: viewer, from: depth}}]
"""


def test_the_effective_pixel_limit_keys_downscaled_steps(tmp_path, monkeypatch):
    photo = save_photo(tmp_path / "big.png", np.full((300, 400, 3), 90, np.uint8))
    keys = {}
    for limit in ("50000", "30000"):
        monkeypatch.setenv("DEPTHCRAFT_MAX_PIXELS", limit)
        for ds in ("true", "false"):
            plan = plan_of(tmp_path / f"{limit}{ds}", RECIPE_DS.format(photo=json.dumps(str(photo)), downscale=ds))
            keys[(limit, ds)] = plan.nodes[("depth", "big")].key
            if ds == "true":
                img = plan.images[0]
                assert img.size == (400, 300)
                assert img.working_size == ((258, 193) if limit == "50000" else (200, 150))
    assert keys[("50000", "true")] != keys[("30000", "true")]  # the limit decides the working size
    assert keys[("50000", "false")] == keys[("30000", "false")]  # it only refuses: earlier entries stay valid


def test_a_downscaled_run_says_so_and_its_manifest_records_limit_and_size(prefect_server, workspace, tmp_path):
    photo = save_photo(tmp_path / "big.png", (np.indices((300, 400)).sum(0)[..., None] % 251).astype(np.uint8)
                       .repeat(3, 2))
    r = tmp_path / "ds.yaml"
    r.write_text(textwrap.dedent(RECIPE_DS.format(photo=json.dumps(str(photo)), downscale="true")))
    for limit, size in (("50000", (258, 193)), ("30000", (200, 150)), ("50000", (258, 193))):
        res = run_cli("run", r, "--out", tmp_path / "out", env={"DEPTHCRAFT_MAX_PIXELS": limit})
        assert res.returncode == 0, res.stderr
        # the one-shot's notice, also when every step is served from the cache (the third run)
        assert f"notice: {photo}: downscaled from 400x300 to {size[0]}x{size[1]} to fit {int(limit) / 1e6:g} MP" \
            in res.stderr, res.stderr
        m = json.loads((tmp_path / "out" / "out" / "ds" / "big" / "manifest.json").read_text())
        assert m["limits"] == {"max_pixels": int(limit), "downscale": True}
        assert m["inputs"][0]["size"] == [400, 300] and m["inputs"][0]["working_size"] == list(size)
        from depthcraft.tasks.lib.depthio import read_depth

        d = read_depth(tmp_path / "out" / "out" / "ds" / "big" / "depth.png")[0]
        assert d.shape == (size[1], size[0])  # the old code served 258x193 from the cache at 30000
    res = run_cli("run", r, "--out", tmp_path / "out", env={"DEPTHCRAFT_MAX_PIXELS": "30000"})
    assert res.returncode == 0, res.stderr
    # reproduce, with the variable unset, runs under the limit the manifest recorded
    env = {k: v for k, v in os.environ.items() if k != "DEPTHCRAFT_MAX_PIXELS"}
    res = subprocess.run([sys.executable, "-m", "depthcraft.flows.cli", "reproduce",
                          str(tmp_path / "out" / "out" / "ds" / "big" / "manifest.json"), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "reproduced" in res.stdout + res.stderr, res.stdout + res.stderr


# -- names and spellings in keys ------------------------------------------------------------------
def test_identical_photos_under_two_names_get_their_own_viewer_title(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    photo, _ = photo_pair(tmp_path)
    twin = tmp_path / "twin.png"
    twin.write_bytes(photo.read_bytes())
    plan = plan_of(tmp_path, f"""\
        version: 1
        name: twins
        provider: classic
        inputs: {{images: [{json.dumps(str(photo))}, {json.dumps(str(twin))}]}}
        steps: [{{id: depth, uses: estimate}}, {{id: v, uses: viewer, from: depth}},
                {{id: t, uses: viewer, from: depth, with: {{title: Same}}}}]
    """)
    n = plan.nodes
    assert n[("depth", "photo")].key == n[("depth", "twin")].key  # content: shared
    assert n[("v", "photo")].key != n[("v", "twin")].key  # the page names its image
    assert n[("t", "photo")].key == n[("t", "twin")].key  # a given title: shared again

    from depthcraft.flows.execute import execute_node
    from depthcraft.flows.runner import _payload
    from depthcraft.flows.workspace import Workspace

    ws = Workspace.default(tmp_path / "ws")
    pages = {}
    for img in plan.images:
        up = execute_node(_payload(plan, ws, "depth", img), [])
        res = execute_node(_payload(plan, ws, "v", img), [up])
        pages[img.name] = Path(res["outputs"]["main"]["path"]).read_text()
    assert "<title>photo" in pages["photo"] and "<title>twin" in pages["twin"]


@pytest.mark.parametrize("spelling", ["320X240", "0320x0240", "320×240", " 320 x 240 "])
def test_equal_sizes_in_other_spellings_share_one_key(tmp_path, spelling):
    photo, _ = photo_pair(tmp_path)
    text = """\
        version: 1
        name: sizes
        provider: classic
        inputs: {{images: [{photo}]}}
        steps: [{{id: depth, uses: estimate}},
                {{id: v, uses: parallax, from: depth, with: {{size: "{size}", preset: {preset}, loop: {loop}}}}}]
    """
    a = plan_of(tmp_path / "a", text.format(photo=json.dumps(str(photo)), size="320x240", preset="medium", loop="true"))
    b = plan_of(tmp_path / "b", text.format(photo=json.dumps(str(photo)), size=spelling, preset="Medium", loop="yes"))
    assert a.nodes[("v", "photo")].key == b.nodes[("v", "photo")].key
    assert b.nodes[("v", "photo")].params.size == "320x240"  # and the manifest shows the one spelling


def test_a_preset_x264_does_not_know_is_refused_before_any_work(tmp_path):
    from depthcraft.tasks.lib.errors import RecipeError

    photo, _ = photo_pair(tmp_path)
    with pytest.raises(RecipeError, match="preset is one of ultrafast"):
        plan_of(tmp_path, f"""\
            version: 1
            name: p
            inputs: {{images: [{json.dumps(str(photo))}]}}
            steps: [{{id: depth, uses: estimate}}, {{id: v, uses: parallax, from: depth, with: {{preset: quick}}}}]
        """)


def test_a_clip_changed_mid_run_fails_its_segment_and_stores_nothing(tmp_path, monkeypatch):
    """Clips are read segment by segment, long after the plan hashed them: a segment whose clip
    has another size or modification time than at plan time fails in one line, unstored."""
    from cliputil import make_clip

    from depthcraft.flows.runner import _payload
    from depthcraft.flows.segments import execute_segment
    from depthcraft.flows.workspace import Workspace
    from depthcraft.tasks.lib.errors import InputError

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    clip = make_clip(tmp_path / "c.mp4", n=12, audio=False)
    plan = plan_of(tmp_path, f"""\
        version: 1
        name: clipswap
        provider: classic
        inputs: {{images: [{json.dumps(str(clip))}]}}
        steps: [{{id: depth, uses: estimate}}]
    """)
    ws = Workspace.default(tmp_path / "ws")
    img = plan.images[0]
    cp = plan.clips[img.name]
    s, e = cp.segments[0]
    payload = {**_payload(plan, ws, "depth", img), "key": cp.keys["depth"][0], "index": 0, "start": s, "stop": e,
               "warmup": cp.warmup, "label": "depth[c]", "target": cp.targets["depth"], "info": cp.info,
               "keep_depth": False}
    clip.write_bytes(clip.read_bytes() + b"\0" * 16)  # edited after the plan (a trailing byte run: still playable)
    with pytest.raises(InputError, match="changed while the run was reading it; run again"):
        execute_segment(payload, [])
    assert ws.store.load_record(payload["key"]) is None
    # a clip touched but not changed (same bytes, a new time) is fine
    clip.write_bytes(clip.read_bytes()[:-16])
    got = execute_segment(payload, [])
    assert ws.store.load_record(payload["key"]) is not None and got["reused"] is False


def test_a_compressed_depth_bomb_is_refused_by_its_header(tmp_path):
    """A given depth map as NPZ: 225 MP of zeros is a few hundred KB compressed; the reader
    inflated it whole (and made it float32: 0.9 GB) before any size check."""
    import zipfile

    from numpy.lib import format as npf

    w = h = 15000
    p = tmp_path / "d.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z, z.open("depth.npy", "w", force_zip64=True) as f:
        npf.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (h, w)})
        row = b"\0" * (w * 100)
        for _ in range(h // 100):
            f.write(row)
    out = run_limited(f"""
        from depthcraft.tasks.lib.depthio import read_depth
        try:
            read_depth({json.dumps(str(p))})
            out["got"] = "read"
        except Exception as e:
            out["got"] = str(e)
    """)
    assert "15000x15000 = 225 MP, over the decoding budget" in out["got"], out
    assert out["maxrss_mb"] - out["base_mb"] < 100, out


def test_an_eachsense_answer_claiming_a_huge_depth_map_is_refused_undecoded(bombs):
    """The service's answer is bytes from the network: a PNG or NPY header claiming 10000 MP is
    refused by its header (it was decoded, or allocated, first)."""
    out = run_limited(f"""
        import io
        from numpy.lib import format as npf
        from depthcraft.tasks.providers.eachsense.provider import decode_depth
        b = io.BytesIO()
        npf.write_array_header_1_0(b, {{"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)}})
        for name, data in (("png", open({json.dumps(str(bombs["bomb"]))}, "rb").read()), ("npy", b.getvalue())):
            try:
                decode_depth(data)
                out[name] = "decoded"
            except Exception as e:
                out[name] = str(e)
    """)
    assert "100000x100000 pixels, over the decoding budget" in out["png"], out
    assert "(100000, 100000), over the decoding budget" in out["npy"], out


def test_a_photo_over_the_decoding_budget_is_not_announced_as_downscaled(tmp_path, bombs, monkeypatch):
    from depthcraft.tasks.lib import notices

    said = []
    monkeypatch.setattr(notices, "_sink", said.append)
    monkeypatch.setattr(notices, "_said", set())
    plan = plan_of(tmp_path, RECIPE_DS.format(photo=json.dumps(str(bombs["bomb"])), downscale="true"))
    assert plan.images[0].size == (100000, 100000) and plan.images[0].working_size is None
    assert said == []  # its step refuses it (over the decoding budget): no "downscaled to 7071x7071"


def test_a_float_tiff_is_keyed_by_its_new_decoding(tmp_path, monkeypatch):
    """A float TIFF with a NaN pixel decoded all black before (tiff 2: its finite range): its
    steps are keyed anew, so a result cached under the old decoding is never served; PNGs keep
    their keys."""
    from PIL import Image

    from depthcraft.tasks.lib import images

    monkeypatch.setenv("DEPTHCRAFT_HOME", str(tmp_path / "ws"))
    a = np.linspace(0, 1, 96 * 128, dtype=np.float32).reshape(96, 128)
    a[5, 5] = np.nan
    Image.fromarray(a).save(tmp_path / "f.tif")  # (float32: mode F)
    save_photo(tmp_path / "p.png", np.full((96, 128, 3), 100, np.uint8))
    text = """\
        version: 1
        name: t
        provider: classic
        inputs:
          images: [f.tif, p.png]
        steps:
          - {id: depth, uses: estimate}
        output: out/{recipe}/{image}/
        """
    now = {k: n.key for k, n in plan_of(tmp_path, text).nodes.items()}
    monkeypatch.setattr(images, "_DECODE_REVISIONS", {})
    before = {k: n.key for k, n in plan_of(tmp_path, text).nodes.items()}
    assert now[("depth", "f")] != before[("depth", "f")]
    assert now[("depth", "p")] == before[("depth", "p")]
    rgb = images.read_image(tmp_path / "f.tif").rgb
    assert rgb[5, 5].tolist() == [0, 0, 0] and rgb.max() == 255  # the finite range, not black
