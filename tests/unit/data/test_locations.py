"""What a location names: s3://, S3 https:// URLs of the configured endpoint only, file:// and paths."""
from pathlib import Path

import pytest

from gateway.data.locations import parse
from gateway.errors import Invalid

LOCAL = "http://127.0.0.1:8333"


@pytest.mark.parametrize("text, endpoint, bucket, key", [
    ("s3://models/iris/model.tar.gz", None, "models", "iris/model.tar.gz"),
    ("s3://models/a%20b.tar.gz", None, "models", "a%20b.tar.gz"),           # S3 keys are literal
    ("s3://models/a/model.tar.gz#x?y", None, "models", "a/model.tar.gz#x?y"),
    ("https://s3.amazonaws.com/models/a%20b.tar.gz", None, "models", "a b.tar.gz"),   # a URL path is %-encoded
    ("https://s3.amazonaws.com/models/iris/model.tar.gz", None, "models", "iris/model.tar.gz"),
    ("https://s3.eu-west-1.amazonaws.com/models/m.tar.gz", None, "models", "m.tar.gz"),
    ("https://models.s3.us-east-2.amazonaws.com/iris/model.tar.gz", None, "models", "iris/model.tar.gz"),
    ("https://my.bucket.s3.amazonaws.com/m.tar.gz", None, "my.bucket", "m.tar.gz"),
    ("https://s3-us-west-2.amazonaws.com/models/m.tar.gz", None, "models", "m.tar.gz"),
    ("http://127.0.0.1:8333/models/iris/model.tar.gz", LOCAL, "models", "iris/model.tar.gz"),
    ("https://minio.example:9000/models/m.tar.gz", "https://minio.example:9000", "models", "m.tar.gz"),
    ("https://models.minio.example:9000/m.tar.gz", "https://minio.example:9000", "models", "m.tar.gz"),
])
def test_s3_locations_path_and_virtual_hosted(text, endpoint, bucket, key):
    loc = parse(text, endpoint)
    assert (loc.scheme, loc.bucket, loc.key) == ("s3", bucket, key)
    assert loc.url == f"s3://{bucket}/{key}"


@pytest.mark.parametrize("text, endpoint", [
    ("https://example.com/models/m.tar.gz", None),                  # not S3
    ("http://s3.amazonaws.com/models/m.tar.gz", None),              # AWS only over https
    ("https://s3.amazonaws.com.evil.example/models/m.tar.gz", None),
    ("https://evil-s3.amazonaws.com.example/m", None),
    ("https://s3.amazonaws.com/models/m.tar.gz", LOCAL),            # a configured endpoint replaces AWS
    ("http://127.0.0.1:9999/models/m.tar.gz", LOCAL),               # another port
    ("https://127.0.0.1:8333/models/m.tar.gz", LOCAL),              # another scheme
    ("http://169.254.169.254/latest/meta-data", LOCAL),             # the metadata address, never fetched
    ("http://127.0.0.1:8333/models/m.tar.gz?x-id=GetObject", LOCAL),
    ("http://user:pw@127.0.0.1:8333/models/m.tar.gz", LOCAL),
    ("http://127.0.0.1:8333/models", LOCAL),                         # no key
    ("ftp://host/m.tar.gz", None),
    ("gs://bucket/m.tar.gz", None),
    ("s3://UPPER/m.tar.gz", None),                                  # not a bucket name
    ("s3://a/m.tar.gz", None),
    ("s3://../m.tar.gz", None),
    ("s3://models/" + "k" * 1100, None),
    ("file://otherhost/etc/passwd", None),
    ("", None), ("s3://models/a\0b", None),
    ("https://[::1/models/a", LOCAL), ("https://127.0.0.1:99999/models/a", LOCAL), ("https://h:abc/models/a", LOCAL),
    ("s3://[models/a", None),
])
def test_refused_locations_say_what_is_accepted(text, endpoint):
    with pytest.raises(Invalid):
        parse(text, endpoint)
    with pytest.raises(Invalid):
        parse(None)


def test_local_paths_and_file_urls():
    assert parse("/models/m.tar.gz").path == Path("/models/m.tar.gz")
    assert parse("file:///models/a%20b").path == Path("/models/a b")
    assert parse("file://localhost/models/m").path == Path("/models/m")
    assert parse("models/m.pkl").scheme == "file"
    assert parse("s3://models/prefix/").is_prefix and not parse("s3://models/m.tar.gz").is_prefix


@pytest.mark.parametrize("key", ["dir/../etc/passwd", "dir//x", "dir/./x", "dir/a\\b", "dir/x\0y", "dir/"])
def test_keys_under_a_prefix_become_paths_inside_its_directory_or_are_refused(key):
    from gateway.data.plane import relative_key

    prefix = parse("s3://models/dir/")
    assert relative_key(prefix, "dir/code/inference.py", "model data") == "code/inference.py"
    with pytest.raises(Invalid, match="not a path inside it"):
        relative_key(prefix, key, "model data")
