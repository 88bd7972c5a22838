"""Checkpoints that are either complete and verified, or ignored.

Commit protocol (both backends):
  1. upload every file of the local folder to checkpoints/step-NNNNNN/ (parallel, multipart on S3);
  2. write checkpoints/step-NNNNNN/empo-manifest.json (size and sha256 of every file);
  3. write checkpoints/LATEST naming the step and the manifest's sha256;
  4. only then delete checkpoints retention no longer keeps (manifest first, so a half-deleted one
     can never look complete).
Fencing: each attempt of a run claims a number (attempts/attempt-NNNNNN.json, one higher than any
before, see RunStorage.claim_attempt) and commits with it. Before each step above, a commit checks
that no newer attempt exists and stops with SupersededError otherwise, so a zombie learner of an
old attempt (its driver killed, its pod not yet gone) cannot move LATEST, or prune, behind the back
of the attempt that replaced it. LATEST records the attempt that wrote it.
A reader trusts only the checkpoint LATEST names, and only when its manifest matches LATEST's
digest and every listed file is there with its size; `download` also checks every sha256. A writer
killed anywhere before step 3 leaves LATEST naming the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from empo_api.paths import UnsafePathError, join_inside

from .backends import Backend
from .errors import CheckpointVerificationError, ObjectNotFoundError
from .layout import (
    CHECKPOINTS,
    LATEST_KEY,
    MANIFEST_NAME,
    build_manifest,
    checkpoint_prefix,
    manifest_bytes,
    manifest_key,
    latest_bytes,
    parse_latest,
    parse_manifest,
    parse_step_dir,
    sha256_file,
    size_mismatches,
    steps_to_delete,
)

log = logging.getLogger("empo_trainer.storage")


@dataclass(frozen=True)
class CheckpointRef:
    """A committed checkpoint whose manifest verified: where it is and what it holds."""

    step: int
    uri: str
    score: float | None
    manifest: dict[str, Any] = field(repr=False, compare=False)

    @property
    def files(self) -> list[str]:
        return [e["path"] for e in self.manifest["files"]]

    @property
    def total_bytes(self) -> int:
        return sum(e["size"] for e in self.manifest["files"])


class CheckpointStore:
    """checkpoints/ of one run. `keep_last` newest checkpoints are kept (plus the best-scoring one
    when `keep_best`); older ones are deleted only after a newer one is committed."""

    def __init__(self, backend: Backend, keep_last: int = 3, keep_best: bool = False):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.backend = backend
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.attempt: int | None = None  # set by RunStorage.claim_attempt / fence_to
        self.fence: Callable[[], None] = lambda: None  # raises SupersededError once a newer attempt exists

    def __repr__(self) -> str:
        return f"CheckpointStore({self.backend.uri_of(CHECKPOINTS)!r}, keep_last={self.keep_last}, keep_best={self.keep_best})"

    def uri_of(self, step: int) -> str:
        return self.backend.uri_of(checkpoint_prefix(step).rstrip("/"))

    # ---------------------------------------------------------------------------------- write

    def commit(self, step: int, local_dir: Path, *, score: float | None = None) -> str:
        """Upload `local_dir` as checkpoint `step`, make it LATEST, apply retention; returns its URI."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise FileNotFoundError(f"checkpoint folder {local_dir} does not exist")
        started = time.monotonic()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest = build_manifest(local_dir, step, score, created)
        prefix = checkpoint_prefix(step)
        self.fence()
        self.backend.upload_files([(prefix + e["path"], local_dir / e["path"]) for e in manifest["files"]])
        body = manifest_bytes(manifest)
        self.fence()
        self.backend.put_bytes(manifest_key(step), body)
        self.fence()
        self.backend.put_bytes(LATEST_KEY, latest_bytes(step, hashlib.sha256(body).hexdigest(), self.attempt))
        total = sum(e["size"] for e in manifest["files"])
        log.info(
            "committed checkpoint %s (%d files, %.1f MB) in %.1fs",
            self.uri_of(step), len(manifest["files"]), total / 1e6, time.monotonic() - started,
        )
        self.prune(step)
        return self.uri_of(step)

    def prune(self, latest_step: int) -> list[int]:
        """Delete checkpoints retention no longer keeps, given that `latest_step` is committed."""
        self.fence()
        committed, partial = self._scan()
        scores = self._scores(committed) if self.keep_best else None
        doomed = steps_to_delete(committed, partial, latest_step, self.keep_last, scores)
        for step in doomed:
            keys = sorted(self.backend.list(checkpoint_prefix(step)))
            manifest = manifest_key(step)
            if manifest in keys:  # first, so the checkpoint stops verifying before its files go
                self.backend.delete([manifest])
            self.backend.delete([k for k in keys if k != manifest])
            log.info("deleted checkpoint %s (retention keep_last=%d)", self.uri_of(step), self.keep_last)
        return doomed

    # ----------------------------------------------------------------------------------- read

    def _scan(self) -> tuple[list[int], list[int]]:
        """(steps with a manifest, steps with files but no manifest)."""
        steps: dict[int, bool] = {}
        for key in self.backend.list(f"{CHECKPOINTS}/"):
            parts = key.split("/")
            if len(parts) < 3:
                continue
            step = parse_step_dir(parts[1])
            if step is not None:
                steps[step] = steps.get(step, False) or parts[-1] == MANIFEST_NAME and len(parts) == 3
        return sorted(s for s, m in steps.items() if m), sorted(s for s, m in steps.items() if not m)

    def _scores(self, steps: list[int]) -> dict[int, float]:
        out = {}
        for step in steps:
            try:
                score = json.loads(self.backend.get_bytes(manifest_key(step))).get("score")
            except (ObjectNotFoundError, ValueError):
                continue
            if isinstance(score, (int, float)):
                out[step] = float(score)
        return out

    def steps(self) -> list[int]:
        """Steps that have a manifest (committed at some point), oldest first."""
        return self._scan()[0]

    def latest(self) -> CheckpointRef | None:
        """The checkpoint LATEST names, verified against its manifest; None if none was ever committed.

        Raises CheckpointVerificationError when LATEST names a checkpoint that does not verify: the
        run's storage was damaged, and silently starting over would overwrite it.
        """
        try:
            pointer = self.backend.get_bytes(LATEST_KEY)
        except ObjectNotFoundError:
            return None
        latest_uri = self.backend.uri_of(LATEST_KEY)
        try:
            step, digest = parse_latest(pointer, latest_uri)
        except ValueError as e:
            raise CheckpointVerificationError(f"{e}; restore it or delete it to start the run over", latest_uri) from None
        return self.verify(step, expected_manifest_sha256=digest)

    def verify(self, step: int, expected_manifest_sha256: str | None = None) -> CheckpointRef:
        """A ref to checkpoint `step` if its manifest parses (and matches the digest given) and every
        file it lists exists with the listed size; CheckpointVerificationError otherwise."""
        uri = self.uri_of(step)
        fix = f"restore {uri} or point {self.backend.uri_of(LATEST_KEY)} at an older checkpoint"
        try:
            body = self.backend.get_bytes(manifest_key(step))
        except ObjectNotFoundError:
            raise CheckpointVerificationError(f"checkpoint {uri} has no {MANIFEST_NAME}; {fix}", uri) from None
        if expected_manifest_sha256 and hashlib.sha256(body).hexdigest() != expected_manifest_sha256:
            raise CheckpointVerificationError(f"checkpoint {uri}: manifest does not match LATEST's digest; {fix}", uri)
        try:
            manifest = parse_manifest(body, self.backend.uri_of(manifest_key(step)))
        except ValueError as e:
            raise CheckpointVerificationError(f"{e}; {fix}", uri) from None
        if manifest.get("step") != step:
            raise CheckpointVerificationError(f"checkpoint {uri}: manifest is for step {manifest.get('step')}; {fix}", uri)
        prefix = checkpoint_prefix(step)
        sizes = {k[len(prefix):]: v for k, v in self.backend.list(prefix).items()}
        problems = size_mismatches(manifest, sizes)
        if problems:
            raise CheckpointVerificationError(f"checkpoint {uri} is incomplete: {'; '.join(problems[:5])}; {fix}", uri)
        return CheckpointRef(step=step, uri=uri, score=manifest.get("score"), manifest=manifest)

    def download(self, ref: CheckpointRef, dest: Path) -> Path:
        """Fetch `ref` into `dest` (parallel), check every sha256, and return `dest`.

        Files already in `dest` with the manifest's size and sha256 are reused, so a restarted pod
        only fetches what it lacks. A file whose sha256 differs is deleted and the call raises
        CheckpointVerificationError. Files in `dest` that the manifest does not list are left alone.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        entries = ref.manifest["files"]
        try:  # manifest paths are plain relative keys (parse_manifest); this also refuses a symlink out
            target = {e["path"]: join_inside(dest, e["path"], "manifest path") for e in entries}
        except UnsafePathError as exc:
            raise CheckpointVerificationError(f"checkpoint {ref.uri}: {exc}; refusing to download it", ref.uri) from None
        missing = [e for e in entries if not _cached(target[e["path"]], e)]
        prefix = checkpoint_prefix(ref.step)
        self.backend.download_files([(prefix + e["path"], target[e["path"]]) for e in missing])
        bad = [e["path"] for e in missing if not _cached(target[e["path"]], e)]
        if bad:
            for rel in bad:
                target[rel].unlink(missing_ok=True)
            raise CheckpointVerificationError(
                f"checkpoint {ref.uri}: {', '.join(bad[:5])} do not match the sha256 in the manifest "
                f"(corrupted in storage); restore them or point LATEST at an older checkpoint",
                ref.uri,
            )
        (dest / MANIFEST_NAME).write_bytes(manifest_bytes(ref.manifest))
        log.info(
            "downloaded checkpoint %s to %s (%d of %d files fetched, %d reused) in %.1fs",
            ref.uri, dest, len(missing), len(entries), len(entries) - len(missing), time.monotonic() - started,
        )
        return dest


def _cached(path: Path, entry: dict[str, Any]) -> bool:
    try:
        if path.stat().st_size != entry["size"]:
            return False
    except FileNotFoundError:
        return False
    return sha256_file(path) == entry["sha256"]
