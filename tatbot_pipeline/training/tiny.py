"""A tiny, randomly initialised SmolVLM backbone built fully offline, for tests, the demo and CPU smoke runs.

SmolVLA loads its vision-language backbone by name (`--policy.vlm_model_name`) with `AutoConfig`,
`AutoProcessor` and `AutoTokenizer`, even with `--policy.load_vlm_weights=false`. The real backbone
(SmolVLM2-500M) cannot be downloaded here, so this module writes a directory those loaders accept: a small
SmolVLM config, a byte-level BPE tokenizer made with the `tokenizers` library (with the image special tokens
SmolVLA looks up) and a SmolVLM processor. No weights are stored: SmolVLA initialises the backbone randomly.

A SmolVLA checkpoint keeps the backbone dir as an absolute path (config `vlm_model_name`, the preprocessor's
`tokenizer_name`), so the dir must stay where it was built: `tiny_smolvlm_dir(settings)` puts it under the
pipeline home.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# The image size the tiny backbone sees; the tiny preset resizes camera frames (with padding) to it.
TINY_IMAGE_SIZE = 64
TINY_VLM_LAYERS = 4
# Bump when the layout below changes, so an old dir is rebuilt instead of silently reused.
TINY_VERSION = 1
_MARKER = "tatbot_tiny_smolvlm.json"

# SmolVLA reads these through `processor.tokenizer.<name>_id`; transformers exposes `extra_special_tokens` that way.
IMAGE_SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "image_token": "<image>",
    "end_of_utterance_token": "<end_of_utterance>",
}
PAD_TOKEN = "<pad>"
_VOCAB_SIZE = 512
# A little text like tatbot's task strings, so BPE merges cover common words; any other text still encodes (bytes).
_CORPUS = [
    "left: draw the outline of the design, right: fill the shaded area with short strokes",
    "left: stroke, right: stroke, pen, ink, needle, skin, line, circle, dot, curve, tatbot logo flower zorya snail",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
]


def tiny_smolvlm_dir(home: Path) -> Path:
    """Stable location of the tiny backbone under the pipeline home (checkpoints point at it by absolute path)."""
    return Path(home).absolute() / "models" / "tiny_smolvlm"


def ensure_tiny_smolvlm(dir: Path) -> Path:
    """Build the tiny SmolVLM backbone dir if it is missing or outdated; return its absolute path.

    Idempotent and safe against a concurrent builder: the dir is written to a temp sibling and renamed in place.
    """
    dir = Path(dir).absolute()
    if _is_current(dir):
        return dir
    dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dir.name}-", dir=dir.parent))
    try:
        _write_backbone(staging)
        if dir.exists() and not _is_current(dir):
            shutil.rmtree(dir)
        try:
            os.rename(staging, dir)
        except OSError:
            if not _is_current(dir):  # someone else won the race with a good dir: keep theirs
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("built tiny SmolVLM backbone at %s", dir)
    return dir


def _is_current(dir: Path) -> bool:
    marker = dir / _MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("version") == TINY_VERSION


def _write_backbone(out: Path) -> None:
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        pad_token=PAD_TOKEN,
        eos_token=IMAGE_SPECIAL_TOKENS["end_of_utterance_token"],
        extra_special_tokens=IMAGE_SPECIAL_TOKENS,
        model_max_length=512,
        padding_side="right",
    )
    hidden = 64
    config = SmolVLMConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE,
            "patch_size": 16,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 128,
            "num_hidden_layers": TINY_VLM_LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": hidden // 4,
            "max_position_embeddings": 512,
            "pad_token_id": tokenizer.pad_token_id,
            "rms_norm_eps": 1e-5,
        },
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_SPECIAL_TOKENS["image_token"]),
        pad_token_id=tokenizer.pad_token_id,
        scale_factor=2,
    )
    # One 64x64 image -> (64/16)^2 = 16 patches -> pixel shuffle by 2 -> 4 image tokens.
    image_seq_len = (TINY_IMAGE_SIZE // 16) ** 2 // config.scale_factor**2
    size = {"longest_edge": TINY_IMAGE_SIZE}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=size, max_image_size=size, do_image_splitting=False),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        image_seq_len=image_seq_len,
    )
    config.save_pretrained(out)
    processor.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "why": "tatbot_pipeline tiny SmolVLM (random init)"}))


def _train_tokenizer():
    """Byte-level BPE, deterministic for the fixed corpus; special tokens get the first ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=[PAD_TOKEN, *IMAGE_SPECIAL_TOKENS.values()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok


def save_tiny_smolvla_checkpoint(out_dir: Path, dataset_root: Path, backbone_dir: Path | None = None) -> Path:
    """Write an untrained tiny SmolVLA checkpoint for `dataset_root`'s features and stats, as `lerobot-train` would.

    For rollout/eval code paths that need a loadable checkpoint without paying for a training run. The chunk size
    is the dataset's episode length (tatbot: one stroke per episode). `backbone_dir` defaults to
    `<out_dir>/../tiny_smolvlm`; returns `out_dir` (a `pretrained_model`-style dir).
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.factory import make_policy, make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    out_dir = Path(out_dir).absolute()
    backbone = ensure_tiny_smolvlm(backbone_dir or out_dir.parent / "tiny_smolvlm")
    meta = LeRobotDatasetMetadata(repo_id=f"local/{Path(dataset_root).name}", root=dataset_root)
    chunk = episode_length(Path(dataset_root))
    cfg = SmolVLAConfig(**tiny_smolvla_fields(backbone, chunk), device="cpu", push_to_hub=False)
    policy = make_policy(cfg, ds_meta=meta)
    preprocessor, postprocessor = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    policy.save_pretrained(out_dir)
    preprocessor.save_pretrained(out_dir)
    postprocessor.save_pretrained(out_dir)
    return out_dir


def tiny_smolvla_fields(backbone: Path, chunk_size: int) -> dict:
    """SmolVLAConfig fields of the tiny variant (the tiny preset passes the same values as CLI flags)."""
    return {
        "vlm_model_name": str(backbone),
        "load_vlm_weights": False,
        "num_vlm_layers": TINY_VLM_LAYERS,
        "resize_imgs_with_padding": (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE),
        "chunk_size": chunk_size,
        "n_action_steps": chunk_size,
        "n_obs_steps": 1,
    }


def episode_length(dataset_root: Path) -> int:
    """Frames per episode of a LeRobot v3.0 dataset; tatbot episodes are one stroke, all of the same length."""
    import pyarrow.parquet as pq

    episodes_dir = Path(dataset_root) / "meta" / "episodes"
    files = sorted(episodes_dir.glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{episodes_dir}: no episodes parquet (dataset never finalized?) — rebuild the split")
    lengths = sorted({int(n) for f in files for n in pq.read_table(f, columns=["length"])["length"].to_pylist()})
    if len(lengths) != 1:
        log.warning("%s: episodes of different lengths %s; using the shortest as chunk size", dataset_root, lengths)
    return lengths[0]
