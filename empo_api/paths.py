"""Object keys and source URIs, confined in one place.

Keys come from outside: a user's s3:// prefix, a bucket listing, a checkpoint's or a staged model's
manifest. Each is joined to a local folder or to a run's prefix, so one that is absolute, or has a
'..' or '.' segment, an empty segment ('//', which S3 keeps literally, as it keeps '..'), a
backslash (a separator elsewhere, and easily misread) or a control character is refused, never
normalised: `a/../b` quietly meaning `b` would hide a mistake or an attack. Nothing on the way
percent-decodes a key (boto3 sends it as written), so '%2e%2e' is an ordinary name, not '..'.

The models refuse such values in storage.uri, model.source, model.revision, dataset.uri and
benchmark data (`empo validate`, the operator, and the API server through the CRD's CEL rule); the
trainer checks again wherever it writes a file named by a key (`join_inside`).
"""

from __future__ import annotations

from pathlib import Path

from .redaction import quote
from .uri import Uri

# The API server's form of the two most dangerous cases (CEL with RE2): a '..' segment, a backslash.
NO_TRAVERSAL_CEL = "!self.matches('(^|/)[.][.](/|$)') && !self.contains('\\\\')"
NO_TRAVERSAL_MESSAGE = "must not contain a '..' path segment or a backslash"


class UnsafePathError(ValueError):
    """A key or path that could name something outside the folder it is meant for."""


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def key_problem(key: str) -> str | None:
    """Why `key`, joined below a folder or prefix, could leave it or name something odd; None if it
    is a plain relative path ('a/b.json', or 'a/b/' for a folder)."""
    if not key:
        return "is empty"
    if "\\" in key:
        return "contains a backslash (separate folders with '/')"
    if _control(key):
        return "contains a control character"
    if key.startswith("/"):
        return "starts with '/' (it must be relative)"
    segments = key.split("/")
    if segments[-1] == "":  # a trailing '/' names a folder
        segments.pop()
    for segment in segments:
        if segment == "..":
            return "has a '..' segment (it must stay inside its folder)"
        if segment == ".":
            return "has a '.' segment"
        if segment == "":
            return "has an empty segment ('//')"
    return None


def local_path_problem(path: str) -> str | None:
    """Why a local path (or a Hugging Face id) is refused: a '..' segment, a backslash or a control
    character. Absolute paths, './x' and '~/x' are the user's choice and fine."""
    if "\\" in path:
        return "contains a backslash (separate folders with '/')"
    if _control(path):
        return "contains a control character"
    if ".." in path.split("/"):
        return "has a '..' segment (write the path without it; an absolute path is fine)"
    return None


def source_problem(uri: str) -> str | None:
    """Why a storage, model or data location is refused: the key of s3://bucket/KEY and the id of
    hf://ID are checked as keys, local paths and Hub ids for '..'."""
    location = Uri.parse(uri)
    if location.is_s3:
        problem = key_problem(location.key) if location.key else None
        return f"the key after the bucket {problem}" if problem else None
    if location.scheme == "hf":
        problem = key_problem(location.key)
        return f"the dataset id after hf:// {problem}" if problem else None
    problem = local_path_problem(uri)
    return f"the path {problem}" if problem else None


def revision_problem(revision: str) -> str | None:
    """A git revision (branch, tag, commit) becomes part of cache paths: a key, and no '..' at all
    (git refuses it in any ref name)."""
    if ".." in revision:
        return "contains '..' (git ref names cannot)"
    return key_problem(revision)


def check_key(key: str, what: str) -> str:
    """`key` if it is a plain relative path, else UnsafePathError naming `what` and the key."""
    problem = key_problem(key) if isinstance(key, str) else "is not a string"
    if problem:
        raise UnsafePathError(f"{what} {quote(key, 200)} {problem}")
    return key


def join_inside(folder: Path, key: str, what: str) -> Path:
    """`folder/key` for a key that came from outside; UnsafePathError when the key is not a plain
    relative path, or leads out of `folder` through a symlink already there."""
    check_key(key, what)
    out = Path(folder).joinpath(*key.rstrip("/").split("/"))
    if not out.resolve().is_relative_to(Path(folder).resolve()):
        raise UnsafePathError(f"{what} {quote(key, 200)} leads outside {folder} (through a symlink)")
    return out
