"""Stage a run's model once into its storage, with checksums, so only the driver fetches it.

On a cluster every sampler and learner pod loads the model. Fetched per pod from the Hugging Face
Hub that is N downloads of the same 15 GB, rate-limited, and impossible for a gated model without
handing the token to every pod. So the driver (the RayJob head, the one pod given HF_TOKEN) fetches
it once into `<run>/model/` next to the checkpoints, writes `empo-manifest.json` (size and sha256 of
every file) last, and hands the actors a spec whose model.source is that folder. Each pod
downloads it from S3 in parallel and verifies it against the manifest before loading
(model_source.verify_manifest). A resumed attempt finds it already staged and fetches nothing.

Local runs (storage in a folder) skip this: every actor already shares the machine's caches.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from empo_api.models import EmpoRunSpec
from empo_api.uri import Uri

from . import model_source
from .model_source import MANIFEST_NAME, ModelSourceError
from .storage.layout import sha256_file

STAGED_KEY = "model"


def needs_staging(spec: EmpoRunSpec) -> bool:
    """A Hub id or an s3:// folder, for a run whose storage every pod reads (S3)."""
    source = Uri.parse(spec.model.source)
    if not Uri.parse(spec.storage.uri).is_s3 or source.scheme == "bundled":
        return False
    if source.is_s3:
        return True
    return not (source.explicit_path or Path(spec.model.source).expanduser().exists())


def build_manifest(folder: Path, source: str, revision: str | None) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return {"source": source, "revision": revision,
            "files": {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                      for p in files}}


def _fetch(source: str, revision: str | None) -> Path:
    """The model as a local folder: from S3, or from the Hub with HF_TOKEN (only here)."""
    if Uri.parse(source).is_s3:
        return Path(model_source.resolve(source, revision))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        # Into the pod's Hugging Face cache (a model already there is used offline, as `empo train` does)
        return Path(snapshot_download(repo_id=source, revision=revision, token=os.environ.get("HF_TOKEN") or None))
    except LocalEntryNotFoundError:
        raise ModelSourceError(f"spec.model.source {source!r}: not in the local Hugging Face cache and the Hub "
                               "cannot be reached (HF_HUB_OFFLINE or no network)") from None
    except HfHubHTTPError as exc:
        raise ModelSourceError(f"spec.model.source {source!r}: the Hub refused the download ({exc}); a gated or "
                               "private model needs spec.model.tokenSecretRef") from None


def stage(spec: EmpoRunSpec, storage) -> tuple[EmpoRunSpec, bool]:
    """(the spec the actors load, whether this call copied the model). Unchanged spec when not staged."""
    if not needs_staging(spec):
        return spec, False
    source, revision = spec.model.source, spec.model.revision
    manifest_key = f"{STAGED_KEY}/{MANIFEST_NAME}"
    copied = False
    staged = storage.read_json(manifest_key) if storage.exists(manifest_key) else None
    if not staged or (staged.get("source"), staged.get("revision")) != (source, revision):
        if staged:  # another model under this run's name: no manifest until the new copy is complete
            storage.delete(manifest_key)
        folder = _fetch(source, revision)
        manifest = build_manifest(folder, source, revision)
        if "config.json" not in manifest["files"]:
            raise ModelSourceError(f"spec.model.source {source!r}: no config.json (not a saved model)")
        stale = [k for k in storage.list(f"{STAGED_KEY}/") if k[len(STAGED_KEY) + 1:] not in manifest["files"]]
        if stale:  # the pods download the whole folder
            storage.delete_keys(stale)
        # through RunStorage: fenced like every write of the run (a superseded driver stops here)
        storage.upload_files([(f"{STAGED_KEY}/{rel}", folder / rel) for rel in manifest["files"]])
        storage.write_json(manifest_key, manifest)  # last: a manifest means a complete copy
        copied = True
    model = spec.model.model_copy(update={"source": storage.uri_of(STAGED_KEY), "revision": None})
    return spec.model_copy(update={"model": model}), copied
