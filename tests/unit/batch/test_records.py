"""Cutting objects into requests: lines and RecordIO, single and multi record, gzip members,
limits named by offset -- and that joining the batches gives the object back, byte for byte."""
import gzip
import io
import random
import struct

import pytest

from gateway.batch.records import RECORDIO_MAGIC, BadInput, RecordTooLarge, batches, chunks


def cut(data, split="Line", strategy="MultiRecord", max_bytes=1000, block=64, gz=False):
    return list(batches(chunks(io.BytesIO(data), gz, block), split, strategy, max_bytes))


def rio(data, flag=0):
    return struct.pack("<II", RECORDIO_MAGIC, len(data) | (flag << 29)) + data + b"\0" * (-len(data) % 4)


@pytest.mark.parametrize("block", [1, 7, 64, 4096])
def test_multi_record_lines_are_cut_at_line_ends_under_the_limit(block):
    rng = random.Random(block)
    text = b"".join(b"x" * rng.randrange(0, 90) + b"\n" for _ in range(500)) + b"no newline at the end"
    got = cut(text, max_bytes=300, block=block)
    assert b"".join(b.data for b in got) == text
    assert all(len(b.data) <= 300 for b in got)
    assert all(b.data.endswith(b"\n") for b in got[:-1])
    assert sum(b.records for b in got) == 501
    assert [b.seq for b in got] == list(range(len(got)))
    assert [b.offset for b in got] == [sum(len(x.data) for x in got[:i]) for i in range(len(got))]


def test_a_line_over_the_limit_is_named_by_its_offset():
    with pytest.raises(RecordTooLarge) as e:
        cut(b"ok\n" * 5 + b"y" * 2000 + b"\n", max_bytes=1000)
    assert e.value.offset == 15 and "byte offset 15" in e.value.message
    with pytest.raises(RecordTooLarge) as e:
        cut(b"ok\n" + b"y" * 2000 + b"\n", strategy="SingleRecord", max_bytes=1000)
    assert e.value.offset == 3


def test_single_record_lines_drop_line_ends_and_blank_lines():
    got = cut(b"a,1\r\n\nb,2\nc,3", strategy="SingleRecord", block=2)
    assert [(b.data, b.offset, b.records) for b in got] == [(b"a,1", 0, 1), (b"b,2", 6, 1), (b"c,3", 10, 1)]


def test_split_none_is_the_object_whole_and_capped():
    assert [b.data for b in cut(b"1,2\n3,4\n", split="None", strategy="SingleRecord")] == [b"1,2\n3,4\n"]
    with pytest.raises(RecordTooLarge):
        cut(b"z" * 1001, split="None", strategy="SingleRecord")


def test_gzip_members_are_read_as_one_stream_and_garbage_is_refused():
    data = gzip.compress(b"1\n2\n") + gzip.compress(b"3\n")
    assert b"".join(b.data for b in cut(data, gz=True, block=5)) == b"1\n2\n3\n"
    with pytest.raises(BadInput, match="not gzip"):
        cut(b"plain text, not gzip", gz=True)
    with pytest.raises(BadInput, match="truncated"):
        cut(gzip.compress(b"1\n" * 1000)[:-12], gz=True)


def test_recordio_keeps_whole_framed_records_and_multi_part_records_together():
    recs = [rio(b"a"), rio(b"bcdef"), rio(b"part1", 1) + rio(b"part2", 2) + rio(b"end", 3), rio(b"z" * 9)]
    data = b"".join(recs)
    single = cut(data, split="RecordIO", strategy="SingleRecord", block=3)
    assert [b.data for b in single] == recs and all(b.records == 1 for b in single)
    multi = cut(data * 5, split="RecordIO", max_bytes=60, block=11)
    assert b"".join(b.data for b in multi) == data * 5
    assert all(len(b.data) <= 60 for b in multi) and sum(b.records for b in multi) == 20


def test_recordio_refuses_what_is_not_recordio():
    with pytest.raises(BadInput, match="not RecordIO"):
        cut(b"hello world, twelve+", split="RecordIO")
    with pytest.raises(BadInput, match="ends inside a record"):
        cut(rio(b"abcdefgh")[:-3], split="RecordIO")
    with pytest.raises(RecordTooLarge):
        cut(rio(b"q" * 2000), split="RecordIO")
