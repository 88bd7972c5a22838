"""empo_api.uri: one parse of every location a spec names, used by the models and the trainer."""

import pytest

from empo_api.uri import Uri


@pytest.mark.parametrize("text,scheme,bucket,key", [
    ("s3://bucket/runs/a", "s3", "bucket", "runs/a"),
    ("s3://bucket", "s3", "bucket", ""),
    ("hf://org/name", "hf", None, "org/name"),
    ("bundled:tiny-random", "bundled", None, "tiny-random"),
    ("bundled:x://y", "other", None, "y"),  # no bundled model: the models refuse it
    ("org/name", "local", None, "org/name"),  # a Hub id reads like a relative path
    ("./runs", "local", None, "./runs"),
    ("http://host/x", "other", None, "host/x"),
])
def test_parse_splits_each_scheme(text, scheme, bucket, key):
    uri = Uri.parse(text)
    assert (uri.scheme, uri.bucket, uri.key, str(uri)) == (scheme, bucket, key, text)


def test_explicit_paths_are_never_hub_ids():
    assert [Uri.parse(t).explicit_path for t in ("./a", "/a", "~/a", "org/name", "s3://b/a")] == \
        [True, True, True, False, False]


@pytest.mark.parametrize("text", ["s3://ab/x", "s3://a..b/x", "s3://a.-b/x", "s3://1.2.3.4/x", "s3://Bucket/x",
                                  "s3://bucket/a\nb"])
def test_buckets_s3_refuses(text):
    assert Uri.parse(text).bucket_problem()


def test_a_valid_bucket_and_other_schemes_have_no_bucket_problem():
    assert Uri.parse("s3://my-bucket.1/a/b").bucket_problem() is None
    assert Uri.parse("hf://org/name").bucket_problem() is None

