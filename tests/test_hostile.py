"""Hostile or huge recipes and inputs end in one clear line, a non-zero exit, within seconds.

YAML alias bombs and deep nesting, a thousand-step chain, URL inputs that are huge, trickle
forever or fail (served lazily by loopback HTTP servers: nothing is stored), image headers
that claim 100000 x 100000 pixels, and PNGs whose data stops early.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from depthcraft.flows.compile import order_steps
from depthcraft.flows.recipe import apply_overrides, load_recipe
from depthcraft.tasks.lib.errors import InputError, RecipeError

HEAD = "version: 1\nname: hostile\ninputs: {images: [p.png]}\nsteps: [{id: d, uses: estimate}]\n"


def _one_line_failure(r, *needles, seconds=None):
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out and "RecursionError" not in out and "MemoryError" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error")]
    assert len(errors) == 1, out
    for n in needles:
        assert n in errors[0], out
    return errors[0]


# -- YAML -------------------------------------------------------------------------------------
def _bomb(levels=9, fan=10, merge=False) -> str:
    text = HEAD + "provider_options:\n  l0: &l0 [" + ", ".join(["lol"] * fan) + "]\n"
    for i in range(1, levels):
        if merge:
            text += f"  l{i}: &l{i} {{<<: *l{i - 1}, " + ", ".join(f"k{j}: *l{i - 1}" for j in range(fan)) + "}\n"
        else:
            text += f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]\n"
    return text


def test_billion_laughs_under_an_allowed_key_is_refused_at_once(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb())
    t = time.monotonic()
    with pytest.raises(RecipeError) as ei:
        load_recipe(p)
    assert time.monotonic() - t < 5
    e = ei.value
    assert e.file == str(p) and e.line is not None and e.key.startswith("provider_options")
    assert "expands to more than" in str(e)


def test_billion_laughs_through_the_command_line(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb(levels=12))
    t = time.monotonic()
    r = run_cli("validate", p, timeout=60)
    _one_line_failure(r, "bomb.yaml:", "provider_options", "expands to more than")
    assert time.monotonic() - t < 30  # the interpreter's start included


def test_a_mapping_bomb_with_merge_keys_is_refused(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text(_bomb(levels=8, fan=8, merge=True))
    with pytest.raises(RecipeError, match="expands to more than"):
        load_recipe(p)


def test_a_recursive_alias_is_refused(tmp_path):
    p = tmp_path / "rec.yaml"
    p.write_text(HEAD + "provider_options: &a {x: *a}\n")
    with pytest.raises(RecipeError, match="recursive alias"):
        load_recipe(p)


@pytest.mark.parametrize("style", ["flow", "block", "mapping"])
def test_nesting_hundreds_of_levels_deep_is_one_clear_line(tmp_path, style):
    n = 600
    if style == "flow":
        value = "[" * n + "]" * n
    elif style == "mapping":
        value = "{a: " * n + "1" + "}" * n
    else:
        value = "\n" + "".join("    " + "  " * i + "- \n" for i in range(n))
    p = tmp_path / "deep.yaml"
    p.write_text(HEAD + "provider_options:\n  x: " + value + "\n")
    with pytest.raises(RecipeError) as ei:
        load_recipe(p)
    assert "nested more than" in str(ei.value) and ei.value.line is not None
    assert len(str(ei.value)) < 400  # the key path is cut, not hundreds of levels long


def test_deep_set_values_do_not_recurse():
    """A value nested past the YAML limit is refused in one short line (not read as text, never a
    RecursionError), naming the --set."""
    data = {"provider_options": {}}
    with pytest.raises(RecipeError) as e:
        apply_overrides(data, ["provider_options.x=" + "[" * 5000 + "]" * 5000])
    msg = str(e.value)
    assert "--set" in msg and "deep" in msg and len(msg) < 300 and "\n" not in msg, msg
    assert data == {"provider_options": {}}


def test_a_normal_recipe_with_anchors_still_loads(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text(HEAD + "provider_options: &o {upsample: bilinear}\nanswers: {q: 'yes'}\n")
    recipe, _ = load_recipe(p)
    assert recipe.provider_options == {"upsample": "bilinear"}


# -- long step chains -------------------------------------------------------------------------
def _chain_recipe(n: int, cycle: bool = False) -> str:
    steps = ["  - {id: s0, uses: estimate" + (f", from: s{n - 1}" if cycle else "") + "}"]
    steps += [f"  - {{id: s{i}, uses: refine, from: s{i - 1}}}" for i in range(1, n)]
    return "version: 1\nname: long\ninputs: {images: [p.png]}\nsteps:\n" + "\n".join(reversed(steps)) + "\n"


def test_a_thousand_step_chain_in_reverse_order(tmp_path):
    p = tmp_path / "long.yaml"
    p.write_text(_chain_recipe(1000))
    recipe, src = load_recipe(p)
    t = time.monotonic()
    order = order_steps(recipe, src)
    assert time.monotonic() - t < 2
    assert order == [f"s{i}" for i in range(1000)]


def test_a_thousand_step_cycle_is_one_readable_line(tmp_path):
    p = tmp_path / "cycle.yaml"
    p.write_text(_chain_recipe(1000, cycle=True))
    recipe, src = load_recipe(p)
    with pytest.raises(RecipeError, match="form a cycle") as ei:
        order_steps(recipe, src)
    assert len(str(ei.value)) < 300


def test_a_thousand_step_chain_validates_from_the_command_line(tmp_path):
    Image.fromarray(np.full((64, 80, 3), 120, np.uint8)).save(tmp_path / "p.png")
    p = tmp_path / "long.yaml"
    p.write_text(_chain_recipe(1000))
    r = run_cli("validate", p, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "1000 step(s)" in r.stdout + r.stderr


# -- URL inputs -------------------------------------------------------------------------------
class Hostile:
    """A loopback server: /huge streams gigabytes (generated, never stored), /huge-announced says
    so in Content-Length, /trickle sends one byte a second forever, /missing is an error page."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.stop = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                try:
                    if self.path.startswith("/huge"):
                        self.send_response(200)
                        self.send_header("Content-Type", "image/png")
                        if self.path == "/huge-announced.png":
                            self.send_header("Content-Length", str(8 * 1024 ** 3))
                        self.end_headers()
                        block = b"\0" * (1 << 20)
                        for _ in range(8 * 1024):  # 8 GB, written as the client reads
                            if outer.stop.is_set():
                                return
                            self.wfile.write(block)
                    elif self.path.startswith("/login"):
                        body = b"<html>please log in</html>"
                        self.send_response(200)
                        self.send_header("Content-Type", "text/html")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    elif self.path.startswith("/trickle"):
                        self.send_response(200)
                        self.send_header("Content-Type", "image/png")
                        self.send_header("Content-Length", "1000000")
                        self.end_headers()
                        while not outer.stop.is_set():
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(1.0)
                    else:
                        body = b"<html>not found</html>"
                        self.send_response(404)
                        self.send_header("Content-Type", "text/html")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile():
    h = Hostile()
    yield h
    h.close()


def _no_partial_files(folder: Path):
    left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert left == [], left


def test_a_response_of_gigabytes_stops_at_the_size_cap(tmp_path, hostile, monkeypatch):
    from depthcraft.flows.fetch import fetch_url

    monkeypatch.setenv("DEPTHCRAFT_FETCH_MAX_BYTES", "5000000")
    t = time.monotonic()
    with pytest.raises(InputError) as ei:
        fetch_url(hostile.url + "/huge.png", tmp_path / "dl")
    assert time.monotonic() - t < 20
    assert hostile.url + "/huge.png" in str(ei.value) and "over the limit of 5 MB" in str(ei.value)
    _no_partial_files(tmp_path / "dl")


def test_an_announced_size_over_the_cap_is_refused_before_reading(tmp_path, hostile):
    from depthcraft.flows.fetch import fetch_url

    t = time.monotonic()
    with pytest.raises(InputError, match="announces 8,590 MB, over the limit of 500 MB"):
        fetch_url(hostile.url + "/huge-announced.png", tmp_path / "dl")
    assert time.monotonic() - t < 5
    _no_partial_files(tmp_path / "dl")


def test_a_server_that_trickles_forever_hits_the_total_deadline(tmp_path, hostile, monkeypatch):
    from depthcraft.flows.fetch import fetch_url

    monkeypatch.setenv("DEPTHCRAFT_FETCH_TIMEOUT", "3")
    t = time.monotonic()
    with pytest.raises(InputError, match="took longer than 3 s"):
        fetch_url(hostile.url + "/trickle.png", tmp_path / "dl")
    assert time.monotonic() - t < 8
    _no_partial_files(tmp_path / "dl")


def test_a_page_that_is_not_an_image_is_named_by_its_url(tmp_path, hostile):
    from depthcraft.flows.fetch import fetch_url, run_scope

    with run_scope():
        for _ in range(2):
            with pytest.raises(InputError, match="not an image .text/html.") as ei:
                fetch_url(hostile.url + "/login.jpg", tmp_path / "dl")
    assert str(ei.value).startswith(hostile.url + "/login.jpg")
    assert hostile.hits == {"/login.jpg": 1}  # once per run, failures included
    _no_partial_files(tmp_path / "dl")


def test_a_trickling_url_input_ends_the_command_with_one_line(tmp_path, hostile):
    p = tmp_path / "r.yaml"
    p.write_text(f"version: 1\nname: slow\ninputs: {{images: ['{hostile.url}/trickle.png']}}\n"
                 "steps: [{id: d, uses: estimate}]\n")
    t = time.monotonic()
    r = run_cli("plan", p, env={"DEPTHCRAFT_HOME": str(tmp_path / "ws"), "DEPTHCRAFT_FETCH_TIMEOUT": "3"},
                timeout=120)
    assert time.monotonic() - t < 60
    assert "took longer than 3 s" in r.stderr and "Traceback" not in r.stderr, r.stderr
    _no_partial_files(tmp_path / "ws" / "downloads")


def test_an_error_page_is_fetched_once_per_run(tmp_path, hostile, prefect_server, photos):
    url = hostile.url + "/missing.jpg"
    p = tmp_path / "r.yaml"
    p.write_text(f"version: 1\nname: oncefetch\ninputs: {{images: ['{photos['chelsea']}', '{url}']}}\n"
                 "steps: [{id: d, uses: estimate}]\n")
    r = run_cli("run", p, "--out", tmp_path / "out", env={"DEPTHCRAFT_HOME": str(tmp_path / "ws")}, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "HTTP 404" in r.stderr and url in r.stderr
    assert hostile.hits == {"/missing.jpg": 1}
    assert (tmp_path / "out" / "out" / "oncefetch" / "chelsea" / "d.png").exists() or \
        list((tmp_path / "out").rglob("d.png")), "the good photo's output is kept"


# -- images that claim more than they hold ----------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(w: int, h: int, rows: int, colour=2, channels=3) -> bytes:
    raw = b"".join(b"\0" + bytes([200]) * (w * channels) for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def _fake_jpeg(w: int, h: int) -> bytes:
    """A baseline JPEG header (SOI, DQT, SOF0, DHT, SOS) claiming w x h, then almost no data."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def test_a_png_header_of_100000_squared_is_refused_without_decoding(tmp_path):
    from depthcraft.tasks.lib.images import read_image

    p = tmp_path / "huge.png"
    p.write_bytes(_png(100_000, 100_000, 1))
    t = time.monotonic()
    with pytest.raises(InputError, match="decoding budget") as ei:
        read_image(p, downscale=True)
    assert time.monotonic() - t < 2 and str(p) in str(ei.value)
    with pytest.raises(InputError, match="over the limit"):
        read_image(p)


def test_a_huge_png_with_downscale_from_the_command_line(tmp_path):
    p = tmp_path / "huge.png"
    p.write_bytes(_png(100_000, 100_000, 1))
    r = run_cli("estimate", p, "--downscale", "-o", tmp_path / "d.png", timeout=120)
    _one_line_failure(r, "huge.png", "decoding budget")


def test_a_jpeg_header_of_60000_squared_is_decoded_reduced_or_refused(tmp_path):
    from depthcraft.tasks.lib.images import read_image

    p = tmp_path / "huge.jpg"
    p.write_bytes(_fake_jpeg(60_000, 60_000))
    t = time.monotonic()
    with pytest.raises(InputError, match="truncated JPEG") as ei:  # libjpeg alone would pad it with gray
        read_image(p, downscale=True)
    assert time.monotonic() - t < 2 and str(p) in str(ei.value)


def test_a_real_jpeg_over_the_limit_is_decoded_reduced_with_a_notice(tmp_path):
    from depthcraft.tasks.lib import notices
    from depthcraft.tasks.lib.images import read_image

    said = []
    notices.set_sink(said.append)
    try:
        rgb = (np.indices((1200, 1600)).sum(axis=0) % 256).astype(np.uint8)
        p = tmp_path / "big.jpg"
        Image.fromarray(np.dstack([rgb] * 3)).save(p, quality=90)
        photo = read_image(p, max_pixels=120_000, downscale=True)
    finally:
        notices.set_sink(None)
    w, h = photo.size
    assert w * h <= 120_000 and abs(w / h - 4 / 3) < 0.02 and photo.downscaled_from == (1600, 1200)
    assert said == [f"{p}: downscaled from 1600x1200 to {w}x{h} to fit 0.12 MP (--downscale)"]


def test_a_png_whose_data_stops_early_is_an_error_naming_it(tmp_path):
    from depthcraft.tasks.lib.depthio import read_depth
    from depthcraft.tasks.lib.images import read_image

    p = tmp_path / "short.png"
    p.write_bytes(_png(100, 80, 40))  # a complete zlib stream holding half of the rows
    im = Image.open(p)
    im.load()  # PIL itself accepts it
    with pytest.raises(InputError, match="truncated PNG: the image data stops early") as ei:
        read_image(p)
    assert str(p) in str(ei.value)
    g = tmp_path / "short-depth.png"
    g.write_bytes(_png(100, 80, 40, colour=0, channels=1))
    with pytest.raises(InputError, match="truncated PNG"):
        read_depth(g)


def test_a_truncated_png_from_the_command_line(tmp_path):
    p = tmp_path / "short.png"
    p.write_bytes(_png(100, 80, 40))
    r = run_cli("estimate", p, "-o", tmp_path / "d.png", timeout=120)
    _one_line_failure(r, "short.png", "truncated PNG")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGB", "RGBA", "P", "I;16"])
def test_complete_pngs_of_every_kind_pass_the_check(tmp_path, mode):
    from depthcraft.tasks.lib.pngcheck import missing_data

    rng = np.random.default_rng(1)
    base = Image.fromarray((rng.random((70, 93, 4)) * 255).astype(np.uint8), "RGBA")
    img = base.convert(mode) if mode != "I;16" else Image.fromarray((rng.random((70, 93)) * 65535).astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert missing_data(buf.getvalue()) is None
    assert missing_data(buf.getvalue()[: len(buf.getvalue()) // 2]) is not None
