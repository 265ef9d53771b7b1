"""The tiny SmolVLM backbone is built offline, reused when present, and loadable by transformers' Auto classes."""

from __future__ import annotations

from tatbot_pipeline.training.tiny import IMAGE_SPECIAL_TOKENS, ensure_tiny_smolvlm, episode_length, tiny_smolvlm_dir


def test_backbone_loads_and_is_reused(train_home, tmp_path):
    from transformers import AutoConfig, AutoProcessor

    backbone = tiny_smolvlm_dir(train_home)
    marker = backbone / "tatbot_tiny_smolvlm.json"
    before = marker.stat().st_mtime_ns
    assert ensure_tiny_smolvlm(backbone) == backbone
    assert marker.stat().st_mtime_ns == before, "an up-to-date backbone must not be rebuilt"

    config = AutoConfig.from_pretrained(backbone)
    processor = AutoProcessor.from_pretrained(backbone)
    tok = processor.tokenizer
    assert config.model_type == "smolvlm" and config.text_config.vocab_size == len(tok)
    for name, token in IMAGE_SPECIAL_TOKENS.items():
        assert getattr(tok, f"{name}_id") == tok.convert_tokens_to_ids(token) != tok.unk_token_id
    ids = tok("left: draw a snail, right: ünïcode ✓")["input_ids"]
    assert tok.decode(ids) == "left: draw a snail, right: ünïcode ✓"


def test_stale_backbone_is_rebuilt(tmp_path):
    backbone = ensure_tiny_smolvlm(tmp_path / "bb")
    (backbone / "tatbot_tiny_smolvlm.json").write_text('{"version": -1}')
    (backbone / "config.json").unlink()
    assert (ensure_tiny_smolvlm(backbone) / "config.json").is_file()


def test_untrained_checkpoint_for_rollout_code(train_home, train_split, tmp_path):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    from tatbot_pipeline.training.tiny import save_tiny_smolvla_checkpoint

    out = save_tiny_smolvla_checkpoint(tmp_path / "pretrained_model", train_split, tiny_smolvlm_dir(train_home))
    policy = SmolVLAPolicy.from_pretrained(out)
    assert policy.config.chunk_size == episode_length(train_split) == 8
    assert sorted(p.name for p in out.glob("policy_*processor.json")) == ["policy_postprocessor.json",
                                                                           "policy_preprocessor.json"]
