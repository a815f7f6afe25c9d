"""Integrity of the artifact store and of ``reproduce`` (issue 10, section 1).

Real processes, a real Prefect server, real files: bytes are flipped in real store objects and
the real command line is run again. An object whose bytes no longer match its sha256 must
never be used or published: it is quarantined (moved aside), recomputed, and the run says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from conftest import run_cli

RECIPE = """\
version: 1
name: integ
inputs:
  images: [{photo}]
steps:
  - {{id: depth, uses: estimate}}
  - {{id: edges, uses: refine, from: depth}}
  - {{id: files, uses: export, from: edges, with: {{formats: [grayscale, npy]}}}}
output: out/{{recipe}}/{{image}}/
"""


def sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def flip(p: Path, at: float = 0.5) -> None:
    """Flip two bytes in the middle of a file, in place (same size)."""
    b = bytearray(Path(p).read_bytes())
    i = int(len(b) * at)
    b[i] ^= 0xFF
    b[i + 1] ^= 0x55
    Path(p).write_bytes(bytes(b))


def setup(tmp_path, photos) -> Path:
    r = tmp_path / "integ.yaml"
    r.write_text(RECIPE.format(photo=json.dumps(str(photos["astronaut"]))))
    return r


def run_json(recipe, out, *extra) -> tuple[dict | None, str, int]:
    res = run_cli("run", recipe, "--out", out, "--json", *extra)
    summary = json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
    return summary, res.stderr, res.returncode


def manifest(summary: dict) -> dict:
    return json.loads(Path(summary["manifest"]).read_text())


def object_of(ws: Path, digest: str) -> Path:
    (p,) = list((ws / "store" / "objects" / digest[:2]).glob(f"{digest}*"))
    return p


def step(man: dict, sid: str) -> dict:
    return next(n for n in man["steps"] if n["step"] == sid)


def test_corrupt_published_object_is_quarantined_recomputed_and_never_published(prefect_server, workspace, tmp_path,
                                                                                  photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    assert rc == 0, err
    m1 = manifest(first)
    edges = step(m1, "edges")["outputs"]["main"]
    obj = object_of(workspace, edges["sha256"])
    flip(obj)

    second, err, rc = run_json(recipe, tmp_path / "b")
    assert rc == 0, err
    m2 = manifest(second)
    out = Path(step(m2, "edges")["outputs"]["main"]["path"])
    # the published file is the true output, and the manifest's hash is the file's hash
    assert sha(out) == edges["sha256"] == step(m2, "edges")["outputs"]["main"]["sha256"]
    assert step(m2, "edges")["status"] == "computed"
    # the bad object was moved aside, not deleted, and the run said so in one line
    q = list((workspace / "store" / "quarantine").iterdir())
    assert len(q) == 1 and q[0].name.endswith(obj.name)
    lines = [ln for ln in err.splitlines() if ln.startswith("store:")]
    assert len(lines) == 1 and "edges[astronaut]" in lines[0] and "is corrupt" in lines[0] \
        and "quarantine" in lines[0], err
    assert m2["quarantined"][0]["object"] == str(obj)
    assert sha(obj) == edges["sha256"]  # the store holds the true bytes again


def test_corrupt_upstream_object_is_recomputed_before_a_downstream_step_reads_it(prefect_server, workspace,
                                                                                   tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    assert rc == 0, err
    rec = next(json.loads(r.read_text()) for r in (workspace / "store" / "records").glob("*.json")
               if json.loads(r.read_text())["info"]["step"] == "estimate")
    npy = Path(rec["outputs"]["depth"]["path"])  # the estimate's float depth: not published, read by refine
    assert npy.suffix == ".npy"
    clean_edges = step(manifest(first), "edges")["outputs"]["main"]["sha256"]
    flip(npy, 0.9)
    # a changed refine parameter makes refine compute again, reading the (corrupt) upstream
    second, err, rc = run_json(recipe, tmp_path / "b", "--set", "steps.edges.with.radius=7")
    assert rc == 0, err
    m2 = manifest(second)
    assert step(m2, "depth")["status"] == "computed"  # recomputed, not read corrupt
    assert "depth[astronaut]" in err and "corrupt" in err
    # and refine computed from the true depth: the same as from a clean store
    third, err, rc = run_json(recipe, tmp_path / "c", "--set", "steps.edges.with.radius=7")
    assert step(manifest(third), "edges")["status"] == "cached"
    res = run_cli("store", "verify")
    assert res.returncode == 0 and "0 do not match" in res.stdout, res.stdout
    del clean_edges


def test_truncated_object_is_caught_by_its_size(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    files = step(manifest(first), "files")["outputs"]
    obj = object_of(workspace, files["npy"]["sha256"])
    obj.write_bytes(obj.read_bytes()[:100])
    second, err, rc = run_json(recipe, tmp_path / "b")
    assert rc == 0, err
    out = Path(step(manifest(second), "files")["outputs"]["npy"]["path"])
    assert sha(out) == files["npy"]["sha256"]
    assert "100 bytes instead of" in err


def test_refresh_recomputes_every_step(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    assert rc == 0 and first["computed"] == 3, err
    again, err, rc = run_json(recipe, tmp_path / "a")
    assert again["cached"] == 3 and again["computed"] == 0
    fresh, err, rc = run_json(recipe, tmp_path / "a", "--refresh")
    assert rc == 0, err
    assert fresh["computed"] == 3 and fresh["cached"] == 0, fresh  # main said "0 computed, 3 cached"
    turns = [json.loads(x) for x in (workspace / "sessions" / f"{fresh['session_id']}.jsonl").read_text().splitlines()]
    assert [t["status"] for t in turns[-3:]] == ["computed"] * 3


def test_reproduce_hashes_the_files_it_wrote(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    m1 = manifest(first)
    obj = object_of(workspace, step(m1, "edges")["outputs"]["main"]["sha256"])
    flip(obj)
    for extra in ([], ["--use-cache"]):
        new = tmp_path / f"new{len(extra)}"
        res = run_cli("reproduce", first["manifest"], "--out", new, *extra)
        # every file it wrote really has the recorded hash (main published the corrupt one and said "all match")
        for n in m1["steps"]:
            for o in n["outputs"].values():
                rel = Path(o["path"]).relative_to(m1["out_root"])
                assert sha(new / rel) == o["sha256"], (rel, res.stderr)
        assert res.returncode == 0 and "reproduced" in res.stderr, res.stderr


def test_reproduce_lists_outputs_that_differ_from_the_manifest(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    m1 = manifest(first)
    # a manifest recorded by other code: one output's recorded hash is not what this code makes
    step(m1, "files")["outputs"]["npy"]["sha256"] = "0" * 64
    fake = tmp_path / "other" / "manifest.json"
    fake.parent.mkdir()
    fake.write_text(json.dumps(m1))
    res = run_cli("reproduce", fake, "--out", tmp_path / "new", "--use-cache")
    assert res.returncode == 1
    assert "files-npy.npy" in res.stderr and "different bytes" in res.stderr and "1 of" in res.stderr, res.stderr


def test_store_verify_reports_and_repair_quarantines(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    obj = object_of(workspace, step(manifest(first), "depth")["outputs"]["main"]["sha256"])
    flip(obj)
    res = run_cli("store", "verify")
    assert res.returncode == 1 and str(obj) in res.stdout and "1 do not match" in res.stdout, res.stdout
    assert obj.exists()  # verify alone changes nothing
    res = run_cli("store", "verify", "--repair")
    assert res.returncode == 0 and "moved to" in res.stdout, res.stdout
    assert not obj.exists() and len(list((workspace / "store" / "quarantine").iterdir())) == 1
    assert run_cli("store", "verify").returncode == 0
    again, err, rc = run_json(recipe, tmp_path / "a")
    assert rc == 0 and step(manifest(again), "depth")["status"] == "computed"


def test_store_gc_lists_then_deletes_only_unreferenced_objects(prefect_server, workspace, tmp_path, photos):
    recipe = setup(tmp_path, photos)
    first, err, rc = run_json(recipe, tmp_path / "a")
    store = workspace / "store"
    old = time.time() - 7200
    orphan = store / "objects" / "ab" / ("ab" + "1" * 62 + ".png")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"not referenced by anything")
    orphan_rec = store / "records" / ("f" * 64 + ".json")
    orphan_rec.write_text(json.dumps({"key": "f" * 64, "outputs": {"main": {"path": str(orphan), "sha256": "x",
                                                                          "kind": "image"}}}))
    for p in (orphan, orphan_rec):
        os.utime(p, (old, old))
    before = sorted(p for p in store.rglob("*") if p.is_file())
    res = run_cli("store", "gc")
    assert res.returncode == 0 and "would remove 1 object(s)" in res.stdout and "1 cache record(s)" in res.stdout, \
        res.stdout
    assert sorted(p for p in store.rglob("*") if p.is_file()) == before  # a dry run deletes nothing
    res = run_cli("store", "gc", "--delete")
    assert res.returncode == 0 and not orphan.exists() and not orphan_rec.exists()
    # objects the runs and sessions reference are kept even when old
    for p in store.rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))
    res = run_cli("store", "gc")
    assert "would remove 0 object(s)" in res.stdout, res.stdout
    again, err, rc = run_json(recipe, tmp_path / "a")
    assert again["cached"] == 3


def test_a_record_naming_files_outside_the_store_or_another_hash_is_not_trusted(tmp_path):
    from depthcraft.tasks.lib.store import Store

    store = Store(tmp_path / "store")
    src = tmp_path / "a.png"
    src.write_bytes(b"the true output")
    a = store.put_file(src, "image")
    store.save_record("k" * 64, {"main": a})
    assert store.has("k" * 64)
    rec = store.record_path("k" * 64)
    body = json.loads(rec.read_text())
    secret = tmp_path / "secret.txt"
    secret.write_text("not an output")
    body["outputs"]["main"]["path"] = str(secret)  # an edited record must not publish any file it names
    rec.write_text(json.dumps(body))
    assert not store.has("k" * 64)
    body["outputs"]["main"].update(path=a.path, sha256="0" * 64)
    rec.write_text(json.dumps(body))
    assert not store.has("k" * 64) and Path(a.path).exists()  # the record is ignored, the object not blamed


def test_a_copy_that_does_not_match_is_never_put_in_place(tmp_path):
    import pytest

    from depthcraft.tasks.lib.store import CorruptObject, copy_verified

    src = tmp_path / "obj.png"
    src.write_bytes(b"x" * 100_000)
    dst = tmp_path / "out" / "edges.png"
    dst.parent.mkdir()
    dst.write_bytes(b"the previous output")
    with pytest.raises(CorruptObject):
        copy_verified(src, dst, "0" * 64)
    assert dst.read_bytes() == b"the previous output" and sorted(p.name for p in dst.parent.iterdir()) == ["edges.png"]
    copy_verified(src, dst, sha(src))
    assert dst.read_bytes() == src.read_bytes()
