"""Storage errors a user can act on: one class per cause, each naming the URI and the fix.

`classify_s3_error` is a pure function from a botocore exception to one of these, so the mapping is
table-tested without a server. Messages are built only from the URI, the operation and S3's error
code: never from the request (whose headers carry signatures) and never from credentials.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)


class StorageError(Exception):
    """Base of every storage failure; `uri` is the object or prefix concerned."""

    def __init__(self, message: str, uri: str):
        super().__init__(message)
        self.uri = uri

    def __reduce__(self):
        # Raised in the learner actor, re-raised in the driver: Ray pickles it on the way, and the
        # default reduce (cls(*args)) would drop `uri` and fail, so the user saw Ray's wrapper instead.
        return (type(self), (str(self), self.uri))


class InvalidCredentialsError(StorageError):
    """Missing, unknown, expired or wrongly signed credentials."""


class BucketNotFoundError(StorageError):
    """The bucket in storage.uri does not exist."""


class WrongRegionError(StorageError):
    """The bucket lives in another region than the client signs for."""


class PermissionDeniedError(StorageError):
    """The credentials are valid but may not perform the operation."""


class StorageUnavailableError(StorageError):
    """The endpoint did not answer, or kept failing (5xx, throttling) after every retry."""


class ObjectNotFoundError(StorageError):
    """A key that was expected under the run does not exist."""


class CheckpointVerificationError(StorageError):
    """A checkpoint does not match its manifest (missing file, wrong size or sha256)."""


class SupersededError(StorageError):
    """A newer attempt of the run has started: this writer (a zombie of an older attempt) must stop."""


class InvalidStorageURIError(StorageError):
    """storage.uri cannot be used (shape, or a key that escapes the run folder)."""


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "UnrecognizedClientException",
}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_PERMISSION_CODES = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}

CREDENTIALS_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for this process; on Kubernetes, "
    "check the Secret named in spec.storage.credentialsSecretRef"
)


def classify_s3_error(exc: BaseException, uri: str, operation: str, *, outage_window_s: float | None = None,
                      endpoint: str | None = None) -> StorageError:
    """The StorageError for a botocore failure of `operation` on `uri` (retries already spent).
    With `outage_window_s`, an unavailable store is said to have been so for that long."""
    if isinstance(exc, StorageError):
        return exc
    err = _classify(exc, uri, operation)
    if outage_window_s and type(err) is StorageUnavailableError and _retried_for_the_window(exc):
        where = f"the S3 store at {endpoint}" if endpoint else "S3"
        cause = _cause(exc)
        err = StorageUnavailableError(
            f"{operation} {uri}: {where} was unavailable for more than {outage_window_s:.0f} s ({cause}), "
            f"longer than the storage outage window (EMPO_STORAGE_OUTAGE_SECONDS); nothing committed is lost: "
            "run again once the store is back and the run resumes from its latest checkpoint", uri)
    return err


def _retried_for_the_window(exc: BaseException) -> bool:
    """Failures the outage window retries (outage.OutageRetry, botocore's retryable kinds)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0)
        return status in (429, 500, 502, 503, 504) or str(error.get("Code", "")) in _THROTTLE_CODES
    return isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError))


def _cause(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        status = (exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode")
        return str(error.get("Code") or status or "error")
    return type(exc).__name__


def _classify(exc: BaseException, uri: str, operation: str) -> StorageError:
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return InvalidCredentialsError(f"{operation} {uri}: no usable S3 credentials were found; {CREDENTIALS_FIX}", uri)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError)):
        return StorageUnavailableError(
            f"{operation} {uri}: the S3 endpoint did not answer after retries ({type(exc).__name__}); "
            "check spec.storage.endpoint and that the store is reachable from this pod",
            uri,
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {}) or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        headers = meta.get("HTTPHeaders", {}) or {}
        if code in _CREDENTIAL_CODES:
            return InvalidCredentialsError(
                f"{operation} {uri}: the store rejected the credentials ({code}); {CREDENTIALS_FIX}", uri
            )
        if code == "NoSuchBucket" or (code in {"404", "NotFound"} and operation in {"head bucket", "open"}):
            return BucketNotFoundError(
                f"{operation} {uri}: the bucket does not exist (NoSuchBucket); create it, or fix the bucket "
                "name in spec.storage.uri",
                uri,
            )
        if code in _REGION_CODES or status == 301:
            actual = headers.get("x-amz-bucket-region") or error.get("Region")
            where = f"the bucket is in region '{actual}'" if actual else "the bucket is in another region"
            return WrongRegionError(f"{operation} {uri}: {where} ({code or status}); set spec.storage.region to it", uri)
        if code in _PERMISSION_CODES or status == 403:
            return PermissionDeniedError(
                f"{operation} {uri}: access denied ({code}); the credentials need s3:GetObject, s3:PutObject, "
                "s3:DeleteObject and s3:ListBucket on this prefix",
                uri,
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFoundError(f"{operation} {uri}: no such object", uri)
        if code in _THROTTLE_CODES or status == 429 or status >= 500:
            return StorageUnavailableError(
                f"{operation} {uri}: the store kept failing after retries ({code or status}); try again later "
                "or check the store's health",
                uri,
            )
        return StorageError(f"{operation} {uri}: S3 error {code or status}", uri)
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{operation} {uri}: {type(exc).__name__}", uri)
    return StorageError(f"{operation} {uri}: {type(exc).__name__}: {exc}", uri)
