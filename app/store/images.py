"""Pictures on disk: each stored once, by content hash, under the data folder's images/ (images/ab/abcd….png).

The files are written before the message row that names them, so a crash never leaves a row
pointing at nothing; at worst it leaves a file no row names, which the next prune removes.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from app.store.records import StoreError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DIGEST = re.compile(r"[0-9a-f]{64}")


class ImageFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise StoreError(f"{digest!r} is not a picture's content hash; the database may be damaged")
        return self.root / digest[:2] / f"{digest}.png"

    def save(self, data: bytes) -> str:
        """Store a PNG (once: the same picture twice is one file); returns its content hash."""
        if not data.startswith(PNG_SIGNATURE):
            raise StoreError("a picture must be stored as PNG; this data is not one")
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
            os.replace(partial, target)  # whole or absent, never half a picture under the final name
        except OSError as exc:
            partial.unlink(missing_ok=True)
            reason = exc.strerror or exc
            raise StoreError(
                f"cannot write the picture to {self.root}: {reason}; free space or choose another data folder"
            ) from exc
        return digest

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except OSError as exc:
            raise StoreError(
                f"the picture {self.path(digest)} cannot be read ({exc.strerror or exc}); "
                "it may have been deleted outside Stride"
            ) from exc

    def remove(self, digests: Iterable[str]) -> None:
        """Delete these pictures' files (ones no message names any more); a file already gone is fine."""
        for digest in digests:
            # A locked or read-only file stays: nothing names it any more, it costs only disk space.
            with suppress(OSError):
                self.path(digest).unlink(missing_ok=True)
