"""The checkpoint digest: by content, path and size of every file, and as cheap as sha256sum (bench_digest.py)."""

import hashlib
import shutil

import pytest

from tatbot_pipeline.digest import DigestMismatch, checkpoint_files, checkpoint_sha256, verify_checkpoint


@pytest.fixture
def checkpoint(tmp_path):
    root = tmp_path / "pretrained_model"
    root.mkdir()
    (root / "config.json").write_text('{"type": "act"}')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 40_000)  # larger than one read
    (root / "sub").mkdir()
    (root / "sub" / "stats.json").write_text("{}")
    return root


def test_the_digest_is_by_content_in_a_fixed_order(checkpoint, tmp_path):
    digest = checkpoint_sha256(checkpoint)
    assert len(digest) == 64 and digest == checkpoint_sha256(shutil.copytree(checkpoint, tmp_path / "copy"))
    assert [p.relative_to(checkpoint).as_posix() for p in checkpoint_files(checkpoint)] == [
        "config.json", "model.safetensors", "sub/stats.json"]
    # By hand: path length, path, size, bytes, per file in that order.
    by_hand = hashlib.sha256()
    for path in checkpoint_files(checkpoint):
        name = path.relative_to(checkpoint).as_posix().encode()
        by_hand.update(len(name).to_bytes(4, "big") + name + path.stat().st_size.to_bytes(8, "big") + path.read_bytes())
    assert digest == by_hand.hexdigest()


@pytest.mark.parametrize("change", ["flip a byte", "edit config", "rename a file", "add a file", "remove a file"])
def test_any_change_changes_the_digest(checkpoint, change):
    before = checkpoint_sha256(checkpoint)
    weights = checkpoint / "model.safetensors"
    if change == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[123_457] ^= 1
        weights.write_bytes(bytes(data))
    elif change == "edit config":
        (checkpoint / "config.json").write_text('{"type": "act", "chunk_size": 9}')
    elif change == "rename a file":
        (checkpoint / "sub" / "stats.json").rename(checkpoint / "sub" / "stats2.json")
    elif change == "add a file":
        (checkpoint / "extra.json").write_text("{}")
    else:
        (checkpoint / "sub" / "stats.json").unlink()
    assert checkpoint_sha256(checkpoint) != before
    with pytest.raises(DigestMismatch, match="changed since it was evaluated"):
        verify_checkpoint(checkpoint, before)


def test_verify_returns_the_digest_and_takes_uppercase(checkpoint):
    digest = checkpoint_sha256(checkpoint)
    assert verify_checkpoint(checkpoint, digest.upper()) == digest


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        checkpoint_sha256(tmp_path / "nope")
