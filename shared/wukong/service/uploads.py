"""Large-graph uploads for ``wukong serve``: the local counterpart of an S3 presigned URL.

An authenticated ``POST /uploads`` issues an unguessable, single-use, expiring upload id; the bytes
are streamed to a file under a size cap; ``POST /jobs {"graph_upload": id}`` consumes the file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class UploadError(Exception):
    """``status`` is the HTTP status the failure maps to."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Upload:
    path: Path
    expires_at: float
    size: int | None = None  # set once the PUT has completed
    writing: bool = False


class UploadStore:
    """Upload files in one private directory; thread-safe, expired entries dropped lazily."""

    def __init__(self, directory: str | None, max_bytes: int, ttl: float):
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="wukong-uploads-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, float]:
        """A new upload id (192 random bits: it is the capability) and when it expires."""
        upload_id = secrets.token_urlsafe(24)
        expires_at = time.time() + self.ttl
        with self._lock:
            self._expire()
            self._uploads[upload_id] = _Upload(self.directory / f"{upload_id}.part", expires_at)
        return upload_id, expires_at

    def begin(self, upload_id: str) -> Path:
        """Claim an issued, unused upload for writing; raises 401 for an unknown or used id."""
        with self._lock:
            self._expire()
            up = self._uploads.get(upload_id)
            if up is None or up.writing or up.size is not None:
                raise UploadError(401, "this upload URL is unknown, expired or already used")
            up.writing = True
            return up.path

    def finish(self, upload_id: str, size: int | None) -> None:
        """Record a completed write (``size``), or forget a failed one (``size`` None)."""
        with self._lock:
            up = self._uploads.get(upload_id)
            if up is None:
                return
            if size is None:
                self._uploads.pop(upload_id)
                up.path.unlink(missing_ok=True)
            else:
                up.size, up.writing = size, False

    def take(self, upload_id: str) -> bytes:
        """The uploaded bytes, once; the file is deleted. Raises 400 when there is no such upload."""
        with self._lock:
            self._expire()
            up = self._uploads.get(upload_id)
            if up is None or up.size is None:
                raise UploadError(400, f"graph_upload {upload_id!r} is not a completed, unexpired upload")
            self._uploads.pop(upload_id)
        try:
            return up.path.read_bytes()
        finally:
            up.path.unlink(missing_ok=True)

    def _expire(self) -> None:
        now = time.time()
        for upload_id in [k for k, u in self._uploads.items() if u.expires_at < now and not u.writing]:
            self._uploads.pop(upload_id).path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for up in self._uploads.values():
                up.path.unlink(missing_ok=True)
            self._uploads.clear()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


def open_private(path: Path):
    """Open ``path`` for writing, readable by this user only (an upload is someone's code)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")
