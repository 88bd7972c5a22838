"""A run in a local folder: atomic writes through a temporary file and os.replace(), the attempt
claim through os.link() (see backends.py for the interface both backends share).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import ObjectNotFoundError, StorageError

_TMP_PREFIX = ".empo-tmp-"
MiB = 1024 * 1024


class LocalBackend:
    def __init__(self, root: Path, max_concurrency: int = 8):
        self.root = Path(root).resolve()
        self.root_uri = str(self.root)
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"LocalBackend({self.root_uri!r})"

    def _path(self, key: str) -> Path:
        return self.root / key

    def uri_of(self, key: str) -> str:
        return str(self._path(key))

    def check(self) -> None:
        """The run folder exists (created) and is writable, or a StorageError saying why not."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the run folder {self.root_uri}: {exc.strerror or exc} "
                               "(is a parent a file? check storage.uri or --output)", self.root_uri) from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"the run folder {self.root_uri} is not writable by this user; "
                               "choose another storage.uri or --output", self.root_uri)

    def _atomic_write(self, dest: Path, write) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # data on disk before the name points at it
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), lambda f: f.write(data))

    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist: True if this call created it, False if it existed.
        The data is written and synced under a temporary name first, then hard-linked to `key`:
        link() fails when the name exists, so of any number of concurrent callers exactly one wins,
        and readers never see the file half written."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, dest)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
        finally:
            Path(tmp).unlink(missing_ok=True)
        return self._create_exclusive(dest, data)  # a file system without hard links

    @staticmethod
    def _create_exclusive(dest: Path, data: bytes) -> bool:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFoundError(f"read {self.uri_of(key)}: no such file", self.uri_of(key)) from None

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of a whole record on an O_APPEND file: readers never see half a line.
        with open(path, "ab") as f:
            f.write(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix) if prefix.endswith("/") or not prefix else self._path(prefix).parent
        if not base.is_dir():
            return {}
        out = {}
        for p in base.rglob("*"):
            if p.is_file() and not p.name.startswith(_TMP_PREFIX):
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    out[rel] = p.stat().st_size
        return out

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        # Drop folders the deletes emptied, up to the run root.
        for parent in sorted({self._path(k).parent for k in keys}, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def clean_leftovers(self) -> tuple[int, int]:
        """Remove the temporary files of writes that never finished (a writer killed mid-write):
        (files removed, bytes freed). Call it only as the run's one writer (after claim_attempt)."""
        removed = freed = 0
        if self.root.is_dir():
            for p in self.root.rglob(f"{_TMP_PREFIX}*"):
                try:
                    size = p.stat().st_size
                    p.unlink()
                except OSError:
                    continue
                removed, freed = removed + 1, freed + size
        return removed, freed

    def upload_files(self, pairs: list[tuple[str, Path]]) -> None:
        def copy(pair: tuple[str, Path]) -> None:
            key, src = pair
            with open(src, "rb") as fin:
                self._atomic_write(self._path(key), lambda fout: shutil.copyfileobj(fin, fout, 8 * MiB))

        with ThreadPoolExecutor(self.max_concurrency) as pool:
            list(pool.map(copy, pairs))

    def download_files(self, pairs: list[tuple[str, Path]]) -> None:
        def copy(pair: tuple[str, Path]) -> None:
            key, dest = pair
            src = self._path(key)
            if not src.is_file():
                raise ObjectNotFoundError(f"read {src}: no such file", str(src))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)

        with ThreadPoolExecutor(self.max_concurrency) as pool:
            list(pool.map(copy, pairs))
