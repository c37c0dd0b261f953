import json
import os
import stat
from pathlib import Path

import pytest

from rait.artifacts import (
    atomic_path,
    canonical,
    changed_field,
    identity_key,
    read_manifest,
    sha256_tree,
    write_jsonl,
    write_manifest,
)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_roundtrip_and_manifest(tmp_path):
    rows = [{"id": "a", "x": 1}, {"id": "b", "x": "ü"}]
    out = tmp_path / "rows.jsonl"
    assert write_jsonl(out, rows) == 2
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == rows
    write_manifest(out, stage="test", inputs={"rows": out}, settings={"k": 10}, seed=3)
    manifest = read_manifest(out)
    assert manifest["stage"] == "test" and manifest["seed"] == 3 and manifest["settings"] == {"k": 10}
    assert manifest["inputs"]["rows"]["sha256"] == sha256_tree(out)


def test_sha256_tree_sees_content_and_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    first = sha256_tree(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("2")
    assert sha256_tree(tmp_path / "d") != first
    (tmp_path / "d" / "a.txt").write_text("1")
    assert sha256_tree(tmp_path / "d") == first
    (tmp_path / "d" / "a.txt").rename(tmp_path / "d" / "b.txt")
    assert sha256_tree(tmp_path / "d") != first


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_artifacts_follow_the_umask(tmp_path, umask, mode):
    """mkstemp makes 0600 files; a shared run folder or model cache must be readable as the umask allows."""
    previous = os.umask(umask)
    try:
        write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "rows.jsonl").stat().st_mode) == mode


def test_one_staleness_key_scheme():
    """Identities compare as they read back from JSON; the key is stable and sees every field."""
    identity = {"settings": {"dims": (8, 16), "seed": 0}, "data_sha256": "ab", "model": Path("/m")}
    stored = json.loads(json.dumps(canonical(identity)))
    assert changed_field(stored, identity) is None
    assert changed_field(stored, identity | {"data_sha256": "cd"}) == "data_sha256"
    assert changed_field(stored, {**identity, "settings": {"dims": (8,), "seed": 0}}) == "settings"
    assert changed_field(None, identity) is not None
    assert identity_key(identity) == identity_key(json.loads(json.dumps(canonical(identity))))
    assert identity_key(identity) != identity_key(identity | {"data_sha256": "cd"})
