"""One type for every location a spec names: `s3://bucket/key`, `hf://org/name`, `bundled:name`,
and a local path (or a Hugging Face Hub id, which looks like a relative path).

Parsed once here, so the models' validators, storage, the model loader and the data readers split
a location the same way instead of each slicing the string with its own prefix test and regex.
Parsing never refuses: which schemes a field allows, and the bucket and key checks, are the
validators' (`bucket_problem` below, `paths.source_problem` for keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# S3's bucket names: 3-63 lowercase letters, digits, '.' and '-', starting and ending alphanumeric.
S3_BUCKET = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
S3_URI = rf"^s3://{S3_BUCKET}(/.*)?$"

Scheme = Literal["s3", "hf", "bundled", "local", "other"]


@dataclass(frozen=True)
class Uri:
    """A location split into its scheme and parts; `str()` gives back the text as written.

    s3: `bucket` and `key` (the object key or prefix after the bucket, as written); hf: `key` is the
    dataset or model id; bundled: `key` is the bundled model's name; local: `key` is the path (or
    a Hub id); other: a scheme we do not read (`http://`, `file://`), `key` the rest."""

    scheme: Scheme
    key: str
    bucket: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "Uri":
        if text.startswith("s3://"):
            bucket, _, key = text[len("s3://"):].partition("/")
            return cls("s3", key, bucket, text)
        if text.startswith("hf://"):
            return cls("hf", text[len("hf://"):], None, text)
        if "://" in text:  # before bundled: 'bundled:x://y' is no bundled model
            return cls("other", text.partition("://")[2], None, text)
        if text.startswith("bundled:"):
            return cls("bundled", text[len("bundled:"):], None, text)
        return cls("local", text, None, text)

    def __str__(self) -> str:
        return self.text

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def explicit_path(self) -> bool:
        """A local location written as a path ('./x', '/x', '~/x'), never a Hub id."""
        return self.scheme == "local" and self.text.startswith((".", "/", "~"))

    def bucket_problem(self) -> str | None:
        """Why an s3:// URI's bucket is not one S3 accepts ('..', '.-', '-.', an IP address, or not
        3-63 lowercase letters, digits, '.' and '-'); None when it is, or for other schemes."""
        if not self.is_s3:
            return None
        bucket = self.bucket or ""
        if not re.match(S3_URI, self.text) or any(bad in bucket for bad in ("..", ".-", "-.")) \
                or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
            return "bucket names are 3-63 lowercase letters, digits, '.' and '-', no '..'"
        return None
