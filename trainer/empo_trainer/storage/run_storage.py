"""One run's folder in storage: `open_run_storage(spec.storage, namespace, name)`.

Metrics on S3: S3 cannot append, so `append_metrics` keeps metrics.jsonl whole as one object. It is
read once per process and then rewritten in full with each new line (one PUT per record, atomic for
readers, no per-step objects to merge). The cost per append grows with the file, which is fine at
one ~1 KB line per optimizer step (a 2,000-step run ends with 2 MB PUTs). One writer per run: the
learner of rank 0, which appends each step's line before that step's checkpoint can commit, and
only while its attempt is the newest (claim_attempt; a zombie of an older attempt is refused).

Fencing covers every write of a run once `fence_to` (or `claim_attempt`) has set the attempt:
checkpoints, metrics, evaluations, the report and its plots, the staged model, tracking files and
deletes each first check that no newer attempt exists (one LIST of attempts/), and stop with
SupersededError otherwise.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

from empo_api.models import StorageSpec

from .backends import Backend, LocalBackend, S3Backend, S3Options
from .checkpoints import CheckpointStore
from .errors import ObjectNotFoundError, StorageError, SupersededError
from .layout import (ATTEMPTS, METRICS_KEY, REPORT_KEY, StorageLocation, attempt_key, clean_key, newest_attempt,
                     parse_metrics)

log = logging.getLogger("empo_trainer.storage")
MAX_CLAIM_TRIES = 64  # numbers taken by concurrent claimers before this one gives up


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a diverged loss) as null: JSON Lines readers reject bare NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunStorage:
    """Files of one run under `<uri>/<namespace>/<run>/`, addressed by relative keys."""

    def __init__(self, backend: Backend, keep_last: int = 3, keep_best: bool = False):
        self.backend = backend
        self.checkpoints = CheckpointStore(backend, keep_last=keep_last, keep_best=keep_best)

    def __repr__(self) -> str:
        return f"RunStorage({self.uri!r})"

    @property
    def uri(self) -> str:
        """The run root: s3://bucket/prefix/<namespace>/<run> or an absolute local path."""
        return self.backend.root_uri

    def uri_of(self, key: str) -> str:
        return self.backend.uri_of(clean_key(key))

    def write_bytes(self, key: str, data: bytes) -> str:
        key = clean_key(key)
        self.check_fence()
        self.backend.put_bytes(key, data)
        return self.backend.uri_of(key)

    def read_bytes(self, key: str) -> bytes:
        return self.backend.get_bytes(clean_key(key))

    def exists(self, key: str) -> bool:
        return self.backend.exists(clean_key(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (relative to the run root), sorted."""
        return sorted(self.backend.list(clean_key(prefix) if prefix else ""))

    def delete(self, key: str) -> None:
        self.delete_keys([key])

    def delete_keys(self, keys: list[str]) -> None:
        keys = [clean_key(k) for k in keys]
        if keys:
            self.check_fence()
            self.backend.delete(keys)

    def write_json(self, key: str, obj: Any) -> str:
        return self.write_bytes(key, (json.dumps(_json_safe(obj), indent=1, sort_keys=True) + "\n").encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def upload_file(self, key: str, path: Path) -> str:
        key = clean_key(key)
        self.upload_files([(key, Path(path))])
        return self.backend.uri_of(key)

    def upload_files(self, pairs: list[tuple[str, Path]]) -> None:
        """Upload local files to keys (parallel; multipart on S3)."""
        pairs = [(clean_key(k), Path(p)) for k, p in pairs]
        self.check_fence()
        self.backend.upload_files(pairs)

    def download_file(self, key: str, dest: Path) -> Path:
        self.backend.download_files([(clean_key(key), Path(dest))])
        return Path(dest)

    # ------------------------------------------------------------------------- one writer per run

    def current_attempt(self) -> int:
        """The newest attempt ever claimed for this run (0: none)."""
        return newest_attempt(self.backend.list(f"{ATTEMPTS}/"))

    def claim_attempt(self, **info: Any) -> int:
        """Start a new attempt: one higher than any before. From now on a writer of an older attempt
        is refused (SupersededError) at its next write. Call it before reading LATEST, so no older
        writer can move LATEST after this attempt has read it.

        Atomic: attempts/attempt-N.json is created only if it does not exist (Backend.create_bytes),
        so two claimers at the same instant never both get N; the one that loses moves on to the next
        free number (and is at once superseded by the winner, as a later attempt should be)."""
        from datetime import datetime, timezone

        claim = uuid.uuid4().hex  # makes our document ours: a retried create recognises its own write
        attempt = self.current_attempt() + 1
        for _ in range(MAX_CLAIM_TRIES):
            doc = {"attempt": attempt, "claim": claim,
                   "startedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
            if self.backend.create_bytes(attempt_key(attempt), (json.dumps(doc, sort_keys=True) + "\n").encode()):
                self.fence_to(attempt)
                return attempt
            attempt = max(attempt + 1, self.current_attempt() + 1)  # taken: never reuse a number
        raise StorageError(f"could not claim an attempt of {self.uri}: {MAX_CLAIM_TRIES} numbers in a row were taken "
                           "by other claimers at the same time; is something starting this run in a loop?", self.uri)

    def clean_leftovers(self) -> tuple[int, int]:
        """What writers killed mid-write left behind: temporary `.empo-tmp-*` files in a local run
        folder, unfinished multipart uploads under an S3 run. Removed (aborted) and logged; returns
        (count, bytes). The driver calls it right after claim_attempt, as the run's one writer."""
        self.check_fence()
        count, size = self.backend.clean_leftovers()
        if count:
            what = "unfinished multipart uploads" if isinstance(self.backend, S3Backend) else "temporary files"
            log.warning("removed %d %s (%.1f MB) that an interrupted writer left under %s",
                        count, what, size / 1e6, self.uri)
        return count, size

    def fence_to(self, attempt: int | None) -> None:
        """Write as `attempt` (claimed by the driver): commits and metrics lines stop with
        SupersededError once a newer attempt exists. None: no fencing (tools, tests)."""
        self.attempt = attempt
        self.checkpoints.attempt = attempt
        self.checkpoints.fence = self.check_fence

    attempt: int | None = None

    def check_fence(self) -> None:
        if self.attempt is None:
            return
        newest = self.current_attempt()
        if newest > self.attempt:
            raise SupersededError(
                f"attempt {self.attempt} of {self.uri} was superseded by attempt {newest}; this writer stops "
                "without touching the run (a newer attempt resumed from its latest checkpoint)", self.uri)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (see the module docstring for S3)."""
        self.check_fence()
        line = json.dumps(_json_safe(record), sort_keys=True, allow_nan=False) + "\n"
        self.backend.append_bytes(METRICS_KEY, line.encode())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl. A line that is not a JSON object (the torn end of an append
        whose writer was killed) is skipped with a warning: it must not block every resume."""
        return self._metrics()[0]

    def _metrics(self) -> tuple[list[dict[str, Any]], int]:
        """(records, lines that could not be read)."""
        try:
            data = self.backend.get_bytes(METRICS_KEY)
        except ObjectNotFoundError:
            return [], 0
        records, torn = parse_metrics(data.decode("utf-8", "replace"))
        for number in torn:
            log.warning("%s line %d is not a metrics record (a writer killed mid-append?); skipped",
                        self.uri_of(METRICS_KEY), number)
        return records, len(torn)

    def trim_metrics(self, keep_through_step: int) -> int:
        """Keep the records up to `keep_through_step` (where a resumed attempt starts), each step
        once, and drop unreadable lines; rewrite the file only if that changes it. Returns the
        number of lines dropped."""
        records, torn = self._metrics()
        kept: dict[int, dict[str, Any]] = {}
        for r in records:
            if r["step"] <= keep_through_step:
                kept[r["step"]] = r  # the later line of a step (a zombie's duplicate) wins
        dropped = len(records) + torn - len(kept)
        if dropped:
            body = "".join(json.dumps(kept[s], sort_keys=True) + "\n" for s in sorted(kept))
            self.check_fence()
            self.backend.put_bytes(METRICS_KEY, body.encode())
        return dropped

    def write_report(self, html: str) -> str:
        return self.write_bytes(REPORT_KEY, html.encode())


def open_run_storage(
    storage: StorageSpec, namespace: str, name: str, *, options: S3Options | None = None, check: bool = True
) -> RunStorage:
    """The run folder `<storage.uri>/<namespace>/<name>/` on a local path or S3.

    S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE, web identity, instance roles), never from the spec. With `check`, the bucket and
    credentials are probed now, so a wrong setup fails at start with a StorageError subclass
    (InvalidCredentialsError, BucketNotFoundError, WrongRegionError, PermissionDeniedError,
    StorageUnavailableError) that names the URI and the fix.
    """
    return open_run_root(run_root(storage, namespace, name), storage, options=options, check=check)


def run_root(storage: StorageSpec, namespace: str, name: str) -> StorageLocation:
    """`<storage.uri>/<namespace>/<name>/`, parsed: the driver parses it once and hands it on."""
    return StorageLocation.parse(storage.uri).run_root(namespace, name)


def open_run_root(location: StorageLocation, storage: StorageSpec, *, options: S3Options | None = None,
                  check: bool = True) -> RunStorage:
    """The run folder at an already parsed run root (a learner opens the driver's `run_root`; it
    does not parse storage.uri again). `storage` gives the endpoint, region and retention."""
    if location.scheme == "s3":
        backend: Backend = S3Backend(location, storage.endpoint, storage.region, options or S3Options())
    else:
        backend = LocalBackend(Path(location.prefix))
    if check:
        backend.check()
    return RunStorage(backend, keep_last=storage.keep_last, keep_best=storage.keep_best)
