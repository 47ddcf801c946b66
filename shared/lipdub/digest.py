"""Content addresses: the SHA-256 of a file's bytes keys uploads, prep caches and batch source dedup."""

from __future__ import annotations

import hashlib
from pathlib import Path

READ_BLOCK = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 of the file's bytes (hex), read in blocks so any size hashes in constant memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()
