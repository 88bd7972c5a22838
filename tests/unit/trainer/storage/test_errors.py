"""Each S3 failure becomes the StorageError subclass that says what to fix (table of real botocore errors)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from empo_trainer.storage import (
    BucketNotFoundError,
    InvalidCredentialsError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageUnavailableError,
    WrongRegionError,
)
from empo_trainer.storage.errors import classify_s3_error

URI = "s3://bucket/runs/ns/run"


def client_error(code: str, status: int, headers: dict | None = None, op: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}},
        op,
    )


@pytest.mark.parametrize(
    "exc, operation, cls, fix",
    [
        (client_error("InvalidAccessKeyId", 403), "read", InvalidCredentialsError, "AWS_ACCESS_KEY_ID"),
        (client_error("SignatureDoesNotMatch", 403), "write", InvalidCredentialsError, "credentialsSecretRef"),
        (client_error("ExpiredToken", 400), "read", InvalidCredentialsError, "AWS_PROFILE"),
        (NoCredentialsError(), "open", InvalidCredentialsError, "AWS_SECRET_ACCESS_KEY"),
        (client_error("NoSuchBucket", 404), "open", BucketNotFoundError, "spec.storage.uri"),
        (client_error("404", 404, op="HeadBucket"), "open", BucketNotFoundError, "create it"),
        (client_error("PermanentRedirect", 301, {"x-amz-bucket-region": "eu-west-1"}), "open", WrongRegionError,
         "region 'eu-west-1'"),
        (client_error("AuthorizationHeaderMalformed", 400), "read", WrongRegionError, "spec.storage.region"),
        (client_error("301", 301), "open", WrongRegionError, "spec.storage.region"),
        (client_error("AccessDenied", 403), "write", PermissionDeniedError, "s3:PutObject"),
        (client_error("403", 403, op="HeadObject"), "read", PermissionDeniedError, "s3:GetObject"),
        (client_error("NoSuchKey", 404), "read", ObjectNotFoundError, "no such object"),
        (client_error("404", 404, op="HeadObject"), "read", ObjectNotFoundError, "no such object"),
        (client_error("SlowDown", 503), "write", StorageUnavailableError, "after retries"),
        (client_error("InternalError", 500), "write", StorageUnavailableError, "after retries"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "open", StorageUnavailableError,
         "spec.storage.endpoint"),
        (ReadTimeoutError(endpoint_url="http://x"), "read", StorageUnavailableError, "reachable"),
        (client_error("WeirdCode", 400), "read", StorageError, "WeirdCode"),
    ],
)
def test_classify(exc, operation, cls, fix):
    err = classify_s3_error(exc, URI, operation)
    assert type(err) is cls
    assert err.uri == URI
    assert str(err).startswith(f"{operation} {URI}: ")
    assert fix in str(err)
