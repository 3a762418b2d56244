"""Caches that must never vouch for the wrong thing (issue 26): the local model's identity is
the sha256 of the file actually there, and the text-embedding cache pairs every text with its
own vector even when two processes add texts at once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import config
import llm
import text as T
from llm import local

ROOT = Path(__file__).resolve().parents[1]


# --- the local model's identity: the verified hash ----------------------------------------------


def _gguf_like(path: Path, n: int = 50_000) -> bytes:
    """A small file that starts like a GGUF file (magic b"GGUF"); its bytes."""
    data = b"GGUF" + bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8))
    path.write_bytes(data)
    return data


def _flip_a_byte_keep_mtime(path: Path, offset: int = 1000) -> bytes:
    """Change one byte in place and restore the mtime (as an adversary would); new bytes."""
    st = path.stat()
    time.sleep(0.05)  # the change lands in a later tick of the (coarse) ctime clock
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        f.seek(offset)
        f.write(bytes([old[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    return path.read_bytes()


@pytest.fixture
def no_racy_window(monkeypatch, tmp_path):
    """Stamps hold as soon as they are written (the 2 s racy window off), the model index
    under tmp_path."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(local, "RACY_NS", 0, raising=False)


def test_model_file_changed_with_mtime_restored_gets_its_own_identity(tmp_path, no_racy_window):
    """Issue 26: a GGUF with one byte changed and its mtime restored kept the genuine file's
    sha256 (the stamp was size + mtime), so its answers were cached under that identity."""
    model = tmp_path / "my-model.gguf"
    data = _gguf_like(model)
    _, path, sha = llm.resolve_local_model(str(model))
    assert path == model and sha == hashlib.sha256(data).hexdigest()
    changed = _flip_a_byte_keep_mtime(model)
    _, _, sha2 = llm.resolve_local_model(str(model))
    assert sha2 == hashlib.sha256(changed).hexdigest() != sha


def test_unchanged_model_file_is_hashed_once(tmp_path, no_racy_window, monkeypatch):
    """Keeping it cheap: a file whose stamp still holds is not hashed again."""
    model = tmp_path / "my-model.gguf"
    _gguf_like(model)
    hashed = []
    real = local._sha256
    monkeypatch.setattr(local, "_sha256", lambda p: hashed.append(p) or real(p))
    shas = {llm.resolve_local_model(str(model))[2] for _ in range(3)}
    assert len(shas) == 1 and len(hashed) == 1


def test_a_stamp_taken_in_the_same_instant_as_a_change_is_checked_again(tmp_path, monkeypatch):
    """The ctime clock is coarse: a change in the same tick as the verification would leave
    the stamp equal, so a stamp that close to the file's last change is re-verified."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    model = tmp_path / "my-model.gguf"
    _gguf_like(model)
    hashed = []
    real = local._sha256
    monkeypatch.setattr(local, "_sha256", lambda p: hashed.append(p) or real(p))
    for _ in range(2):
        llm.resolve_local_model(str(model))
    assert len(hashed) == 2  # just written: within RACY_NS, so hashed again


def _fake_part_package(root: Path, name: str, chunks: list[bytes]) -> None:
    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for i, c in enumerate(chunks, 1):
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(c)


def test_packaged_model_changed_in_place_is_assembled_again(tmp_path, no_racy_window, monkeypatch):
    """Issue 26: assemble_model trusted its stamp (sha256, size, mtime): the changed file was
    used, under the genuine model's identity."""
    data = b"GGUF" + bytes(range(256)) * 200
    _fake_part_package(tmp_path / "pkgs", "fake_model_part1", [data[:20_000], data[20_000:]])
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    spec = {
        "packages": ["fake_model_part1"],
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "install": "uv sync",
    }
    monkeypatch.setitem(llm.LOCAL_MODELS, "fake-model", spec)
    target = llm.assemble_model("fake-model", models_dir=tmp_path / "models")
    assert target.read_bytes() == data
    _flip_a_byte_keep_mtime(target)
    again = llm.assemble_model("fake-model", models_dir=tmp_path / "models")
    assert again.read_bytes() == data  # verified, found changed, assembled again


# --- the text-embedding cache ------------------------------------------------------------------

# A deterministic stand-in for the sentence model, used by the test and its child processes.
FAKE_MODEL = '''
import hashlib, numpy as np

class FakeModel:
    """encode(): a unit vector per text, fixed by its sha1 (like tests/conftest.hash_embed)."""
    calls = 0

    def encode(self, texts, **kw):
        FakeModel.calls += 1
        out = np.stack([
            np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))
            .standard_normal(384) for t in texts
        ])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
'''

WRITER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import text as T
from fake_model import FakeModel
T._SENTENCE_MODEL = FakeModel()
cache, who, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4])
time.sleep(max(0.0, float(sys.argv[5]) - time.time()))  # start together
for r in range(rounds):
    T.embed_texts([f"{who} text {r} {j}" for j in range(3)], progress=False, cache_dir=cache)
"""


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    (tmp_path / "fake_model.py").write_text(FAKE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    from fake_model import FakeModel

    FakeModel.calls = 0
    monkeypatch.setattr(T, "_SENTENCE_MODEL", FakeModel())
    return FakeModel


def test_two_writers_at_once_keep_every_text_with_its_own_vector(tmp_path, fake_model):
    """Issue 26: the cache was written through fixed temporary names (vectors.tmp.npy,
    index.tmp.json) as two files: two processes adding texts at once could pair one's index
    with the other's vectors, or lose each other's texts."""
    (tmp_path / "writer.py").write_text(WRITER)
    cache, rounds = tmp_path / "emb", 25
    start = time.time() + 1.5
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "writer.py"), str(ROOT), str(cache), who]
            + [str(rounds), str(start)],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("alpha", "beta")
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    texts = [
        f"{w} text {r} {j}" for w in ("alpha", "beta") for r in range(rounds) for j in range(3)
    ]
    fresh = fake_model().encode(texts)
    fake_model.calls = 0
    got = T.embed_texts(texts, progress=False, cache_dir=cache)
    assert fake_model.calls == 0  # every text of both writers is in the cache...
    np.testing.assert_array_equal(got, fresh)  # ...with its own vector


def test_the_cache_of_the_old_two_file_layout_is_still_read(tmp_path, fake_model):
    texts = ["Milk. dairy. dairy eggs.", "Bread. bakery. bakery."]
    vecs = fake_model().encode(texts)
    folder = tmp_path / "emb" / T.TEXT_MODEL
    folder.mkdir(parents=True)
    np.save(folder / "vectors.npy", vecs)
    (folder / "index.json").write_text(
        json.dumps({T._text_hash(texts[1]): 1, T._text_hash(texts[0]): 0})
    )
    fake_model.calls = 0
    got = T.embed_texts(texts[::-1], progress=False, cache_dir=tmp_path / "emb")
    assert fake_model.calls == 0
    np.testing.assert_array_equal(got, vecs[::-1])
    more = T.embed_texts(
        [*texts, "Eggs. eggs. dairy eggs."], progress=False, cache_dir=tmp_path / "emb"
    )
    assert fake_model.calls == 1  # only the new text was encoded
    np.testing.assert_array_equal(more, fake_model().encode([*texts, "Eggs. eggs. dairy eggs."]))


def test_a_damaged_cache_file_is_rebuilt_not_misread(tmp_path, fake_model):
    texts = ["Milk. dairy. dairy eggs.", "Bread. bakery. bakery."]
    T.embed_texts(texts, progress=False, cache_dir=tmp_path / "emb")
    for f in (tmp_path / "emb" / T.TEXT_MODEL).iterdir():
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # torn
    got = T.embed_texts(texts, progress=False, cache_dir=tmp_path / "emb")
    np.testing.assert_array_equal(got, fake_model().encode(texts))


def test_saved_towers_follow_the_data_content_not_the_file_times(small_sample_dir, tmp_path):
    """A copy of the same CSVs with new mtimes keeps the towers' data key (a new session's
    data folder must not retrain every tower); one changed row changes it."""
    import shutil

    import common as C

    copy = tmp_path / "copy"
    shutil.copytree(small_sample_dir, copy, copy_function=shutil.copy)  # new mtimes
    for f in copy.iterdir():
        os.utime(f, (1_000_000_000, 1_000_000_000))
    load = lambda d: C.load_dataset(d, n_users=200, n_items=800, use_cache=False, verbose=False)
    a, b = load(small_sample_dir), load(copy)
    assert a.key != b.key and a.content_key == b.content_key
    import towers

    split_a, split_b = (C.split_interactions(d.interactions) for d in (a, b))
    model = C.TwoTower(C.TowerConfig(hidden=8, dim=4), C.build_features(a, split_a.train), 200, 800)
    assert towers.model_dir(a, split_a, model) == towers.model_dir(b, split_b, model)
    prior = copy / "order_products__prior.csv"
    lines = prior.read_text().splitlines()
    order = str(a.interactions["order_id"].iloc[0])  # a row the sample keeps
    j = next(i for i, line in enumerate(lines) if line.split(",")[0] == order)
    cols = lines[j].split(",")
    cols[3] = "0" if cols[3] == "1" else "1"  # its `reordered` flag
    lines[j] = ",".join(cols)
    prior.write_text("\n".join(lines) + "\n")
    assert load(copy).content_key != a.content_key
