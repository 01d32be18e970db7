"""The S3 wrapper's download, on a fake client: parts land where they belong, or not at all."""
import io

import pytest

from gateway.data.s3 import PART_BYTES, S3, ObjectInfo, S3Error


class FakeClient:
    def __init__(self, data: bytes, honour_range: bool = True):
        self.data, self.honour_range = data, honour_range

    def get_object(self, Bucket, Key, IfMatch, Range=None):  # noqa: N803 - boto3's names
        if Range and self.honour_range:
            lo, hi = map(int, Range.removeprefix("bytes=").split("-"))
            return {"Body": io.BytesIO(self.data[lo:hi + 1]), "ContentRange": f"bytes {lo}-{hi}/{len(self.data)}"}
        return {"Body": io.BytesIO(self.data)}


def _s3(client):
    s3 = S3()
    s3._client = client
    return s3


def test_ranged_parts_are_written_at_their_offsets_and_a_store_ignoring_range_is_refused(tmp_path):
    data = bytes(range(256)) * ((2 * PART_BYTES + 12345) // 256)
    info = ObjectInfo("models", "m.tar.gz", "etag", len(data))
    _s3(FakeClient(data)).download(info, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == data
    with pytest.raises(S3Error, match="the whole object"):
        _s3(FakeClient(data, honour_range=False)).download(info, tmp_path / "bad")
