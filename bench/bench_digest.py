"""Checkpoint digest cost vs `sha256sum` of the same files (issue 27's budget: ≤ 1.2×).

A made-up SmolVLA-base-sized checkpoint (~900 MB: one large safetensors, processor files), hashed from the page
cache by both, best of three each, alternating. Last line: `digest <X>× sha256sum (<a> s vs <b> s for <N> MB)`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from tatbot_pipeline.digest import checkpoint_files, checkpoint_sha256

SIZE_MB = int(os.environ.get("BENCH_DIGEST_MB", "900"))


def make_checkpoint(root: Path) -> Path:
    root.mkdir(parents=True)
    block = os.urandom(1 << 20)
    with open(root / "model.safetensors", "wb") as f:
        for i in range(SIZE_MB):
            f.write(block[i % 7:] + block[: i % 7])  # 1 MiB each, not all identical
    for name in ("config.json", "train_config.json", "policy_preprocessor.json", "policy_postprocessor.json"):
        (root / name).write_text('{"type": "smolvla"}' * 50)
    for name in ("policy_preprocessor_step_5_normalizer_processor.safetensors",
                 "policy_postprocessor_step_0_unnormalizer_processor.safetensors"):
        (root / name).write_bytes(os.urandom(4096))
    return root


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = make_checkpoint(Path(tmp) / "pretrained_model")
        files = [str(p) for p in checkpoint_files(root)]
        sha256sum = lambda: subprocess.run(["sha256sum", *files], check=True, capture_output=True)  # noqa: E731
        ours = lambda: checkpoint_sha256(root)  # noqa: E731
        sha256sum(), ours()  # both from the page cache
        theirs_s, ours_s = [], []
        for _ in range(3):
            theirs_s.append(best_of(1, sha256sum))
            ours_s.append(best_of(1, ours))
        a, b = min(ours_s), min(theirs_s)
        total = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"digest {a / b:.2f}× sha256sum ({a:.2f} s vs {b:.2f} s for {total:.0f} MB; target ≤ 1.2×)")


if __name__ == "__main__":
    main()
