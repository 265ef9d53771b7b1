"""A checkpoint's identity by content: one SHA-256 over the files of its `pretrained_model` dir.

Between training and the arms a checkpoint is evaluated in place, promoted by path, copied to the robot node and
loaded there; a resumed run that rewrote `last/`, a half-synced copy or a hand-edited `config.json` would all roll out
under the promoted name. The digest says whether the bytes the robot loads are the bytes that passed the gate.

What it covers: every regular file below the dir (config, weights, processor files and their stats), in the order
of their relative POSIX paths; each contributes its path, its size and its bytes, so renaming or moving a file
changes the digest as surely as editing it. Hashing is sequential large reads into one `hashlib.sha256`, which
releases the GIL: about what `sha256sum` costs for the same bytes (bench/bench_digest.py).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 4 << 20  # 4 MiB reads: the hash, not the syscalls, sets the pace


class DigestMismatch(RuntimeError):
    """A checkpoint's files are not the ones whose digest was recorded."""


def checkpoint_files(checkpoint: Path) -> list[Path]:
    """The files the digest covers, in digest order."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint {root} is not a directory")
    return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def checkpoint_sha256(checkpoint: Path) -> str:
    """The hex SHA-256 of `checkpoint` (a pretrained_model dir) by content, path and size of every file."""
    root = Path(checkpoint)
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    for path in checkpoint_files(root):
        name = path.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name + path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
    return digest.hexdigest()


def expected_sha256(text: str) -> str:
    """A digest a person passes on the command line (as sha256sum or `tatbot-pipeline digest` prints it, any case),
    normalised; ValueError naming it otherwise, so a typo is not reported as a changed checkpoint."""
    digest = text.strip().lower()
    if not SHA256_RE.match(digest):
        raise ValueError(f"{text!r} is not a SHA-256 digest (64 hex digits)")
    return digest


def verify_checkpoint(checkpoint: Path, expected: str, what: str = "checkpoint") -> str:
    """Raise DigestMismatch unless `checkpoint`'s digest is `expected`; returns it."""
    actual = checkpoint_sha256(checkpoint)
    if actual != expected.lower():
        raise DigestMismatch(f"{what} changed since it was evaluated: its files' SHA-256 is {actual[:12]}…, the "
                             f"evaluated one was {expected[:12]}… — evaluate it again, or deploy the evaluated copy")
    return actual
