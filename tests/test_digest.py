"""The checkpoint digest: by content, path and size of every file, and as cheap as sha256sum (bench_digest.py); the
CLI compares it with a given or the evaluated digest."""

import hashlib
import shutil

import pytest

from tatbot_pipeline.cli import main
from tatbot_pipeline.config import PipelineSettings
from tatbot_pipeline.digest import DigestMismatch, checkpoint_files, checkpoint_sha256, verify_checkpoint
from tatbot_pipeline.promotion import add_to_leaderboard


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


def tampered(checkpoint, dest):
    """A copy with one byte of its weights changed."""
    copy = shutil.copytree(checkpoint, dest)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[4_242] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    return copy


def test_the_cli_compares_with_an_expected_digest(checkpoint, tmp_path, capsys):
    digest = checkpoint_sha256(checkpoint)
    assert main(["digest", str(checkpoint), "--expect", digest.upper()]) == 0
    out = capsys.readouterr().out
    assert out == f"{digest}  {checkpoint}\nmatch: --expect is {digest}\n"  # both
    copy = tampered(checkpoint, tmp_path / "copy")
    assert main(["digest", str(copy), "--expect", digest]) == 1
    err = capsys.readouterr().err
    assert f"MISMATCH: the files of {copy} have SHA-256 {checkpoint_sha256(copy)}, but --expect is {digest}" in err
    assert main(["digest", str(checkpoint), "--expect", digest[:12]]) == 2
    assert "is not a SHA-256 digest (64 hex digits)" in capsys.readouterr().err
    assert main(["digest", str(tmp_path / "nope"), "--expect", digest]) == 2
    assert main(["digest", str(copy)]) == 0  # no comparison asked for: the digest alone


def test_the_cli_compares_a_deployed_copy_with_its_evaluation(checkpoint, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("TATBOT_PIPELINE_HOME", str(home))
    evaluated = shutil.copytree(checkpoint, home / "outputs/train/act-1a2b/checkpoints/last/pretrained_model")
    digest = checkpoint_sha256(evaluated)
    add_to_leaderboard(PipelineSettings.from_env(), {"checkpoint": str(evaluated), "checkpoint_sha256": digest,
                                                      "promoted": True, "evaluated_at": "2026-12-01T02:00:00+00:00"})
    deployed = shutil.copytree(evaluated, tmp_path / "node/checkpoints/act-1a2b-last")  # as deploy_local names it
    for where in (evaluated, deployed):
        assert main(["digest", str(where), "--evaluated"]) == 0
        assert capsys.readouterr().out.splitlines()[1] == (
            f"match: the digest recorded when act-1a2b was evaluated ({home}/outputs/eval/leaderboard.json, "
            f"2026-12-01T02:00:00+00:00) is {digest}")
    shutil.rmtree(deployed)
    tampered(evaluated, deployed)
    assert main(["digest", str(deployed), "--evaluated"]) == 1
    err = capsys.readouterr().err
    assert f"have SHA-256 {checkpoint_sha256(deployed)}, but the digest recorded when act-1a2b" in err
    assert f"is {digest} — these are not the evaluated bytes" in err
    # Nothing recorded: bad input, not a mismatch.
    assert main(["digest", str(checkpoint), "--evaluated"]) == 2
    assert f"no evaluation of {checkpoint} is recorded in {home}/outputs/eval/leaderboard.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as both:
        main(["digest", str(checkpoint), "--evaluated", "--expect", digest])
    assert both.value.code == 2
