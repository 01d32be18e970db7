"""Cutting an input object into the requests of a transform job, and joining the answers.

Pure and synchronous (the runner calls it in a thread): bytes in, batches out.  The gateway's
share of a job's CPU must stay small, so records are never parsed: a MultiRecord batch of lines
is cut at the last newline before MaxPayloadInMB (one ``rfind`` per batch), a RecordIO batch at
the last whole record; only SingleRecord walks record by record.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

READ_BYTES = 8 << 20
RECORDIO_MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1


class BadInput(Exception):
    """An object that cannot be read as the job says it is (not gzip, not RecordIO)."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(message)
        self.message, self.offset = message, offset


class RecordTooLarge(BadInput):
    def __init__(self, offset: int, size: int | None, limit: int):
        what = f"of {size} bytes" if size is not None else "longer than that"
        super().__init__(f"the record at byte offset {offset} is {what}, over the MaxPayloadInMB limit of "
                         f"{limit / (1 << 20):g} MB", offset)


@dataclass(frozen=True)
class Batch:
    seq: int          # its place in the object: answers are written in this order
    offset: int       # byte offset of its first record in the (uncompressed) object
    data: bytes
    records: int


def chunks(fh: BinaryIO, gzip: bool, size: int = READ_BYTES) -> Iterator[bytes]:
    """The object's bytes a buffer at a time, gunzipped when ``gzip`` (several members joined, as
    ``cat a.gz b.gz`` makes, read as one stream); at most ``size`` uncompressed bytes at once."""
    if not gzip:
        while block := fh.read(size):
            yield block
        return
    d = zlib.decompressobj(wbits=31)
    consumed = 0
    started = False
    while True:
        block = fh.read(size)
        if not block:
            break
        data = block
        while data:
            try:
                out = d.decompress(data, size)
            except zlib.error as exc:
                raise BadInput(f"it is not gzip data ({exc}); set CompressionType None for uncompressed "
                               "objects", consumed) from None
            started = True
            if out:
                yield out
            data = d.unconsumed_tail
            while d.eof and not data and d.unused_data:        # the next member of a multi-member file
                data, d = d.unused_data, zlib.decompressobj(wbits=31)
            consumed += len(block) - len(data) if not data else 0
            if d.eof and not data:
                break
        while tail := d.decompress(b"", size):
            yield tail
    if started and not d.eof:
        raise BadInput("the gzip data ends before its end: the object is truncated")


def batches(blocks: Iterable[bytes], split: str, strategy: str, max_bytes: int) -> Iterator[Batch]:
    """The requests of one object: ``split`` None (the object whole), Line or RecordIO;
    ``strategy`` SingleRecord (one record each) or MultiRecord (as many whole records as fit
    in ``max_bytes``).  A record over ``max_bytes`` raises RecordTooLarge with its offset."""
    if split == "None":
        return _whole(blocks, max_bytes)
    if split == "Line":
        return _lines_single(blocks, max_bytes) if strategy == "SingleRecord" else _lines_multi(blocks, max_bytes)
    if split == "RecordIO":
        return _recordio(blocks, max_bytes, single=strategy == "SingleRecord")
    raise ValueError(f"unknown SplitType {split}")


def _whole(blocks: Iterable[bytes], max_bytes: int) -> Iterator[Batch]:
    buf = bytearray()
    for block in blocks:
        buf += block
        if len(buf) > max_bytes:
            raise RecordTooLarge(0, None, max_bytes)
    yield Batch(0, 0, bytes(buf), 1 if buf else 0)


def _lines_multi(blocks: Iterable[bytes], max_bytes: int) -> Iterator[Batch]:
    """Batches cut at the last newline that fits, by offsets into the bytes read: each byte is
    copied once into its batch (and once more where a read block is joined to what was left)."""
    rest, base, seq = b"", 0, 0
    for block in blocks:
        data = rest + block if rest else block
        start = 0
        while len(data) - start > max_bytes:
            cut = data.rfind(b"\n", start, start + max_bytes)
            if cut < 0:
                raise RecordTooLarge(base + start, None, max_bytes)
            batch = data[start:cut + 1]
            yield Batch(seq, base + start, batch, batch.count(b"\n"))
            seq += 1
            start = cut + 1
        rest = data[start:]
        base += start
    if rest:
        yield Batch(seq, base, rest, rest.count(b"\n") + (0 if rest.endswith(b"\n") else 1))


def _lines_single(blocks: Iterable[bytes], max_bytes: int) -> Iterator[Batch]:
    """One request per non-empty line, without its line ending."""
    buf, base, seq = bytearray(), 0, 0
    for block in blocks:
        buf += block
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:nl]).rstrip(b"\r")
            if len(line) > max_bytes:
                raise RecordTooLarge(base + start, len(line), max_bytes)
            if line:
                yield Batch(seq, base + start, line, 1)
                seq += 1
            start = nl + 1
        del buf[:start]
        base += start
        if len(buf) > max_bytes:
            raise RecordTooLarge(base, None, max_bytes)
    line = bytes(buf).rstrip(b"\r")
    if line:
        yield Batch(seq, base, line, 1)


def _recordio(blocks: Iterable[bytes], max_bytes: int, single: bool) -> Iterator[Batch]:
    """MXNet RecordIO: each record is a magic word, a length word (its top three bits a part flag:
    0 whole, 1 first, 2 middle, 3 last part of a record split in parts) and the data padded to
    four bytes.  Records are handed over whole, framing included, so a batch is RecordIO again."""
    buf = bytearray()
    base = seq = 0            # offset of buf[0] in the object; batches made so far
    batch_end = records = 0   # buf[:batch_end] holds the open batch's ``records`` whole records
    rec_start = pos = 0       # the record being read began at rec_start; its next header is at pos

    def cut() -> Batch:
        nonlocal buf, base, seq, batch_end, records, rec_start, pos
        out = Batch(seq, base, bytes(buf[:batch_end]), records)
        del buf[:batch_end]
        base, seq = base + batch_end, seq + 1
        pos, rec_start = pos - batch_end, rec_start - batch_end
        batch_end = records = 0
        return out

    for block in blocks:
        buf += block
        while len(buf) - pos >= _HEADER.size:
            magic, lrec = _HEADER.unpack_from(buf, pos)
            if magic != RECORDIO_MAGIC:
                raise BadInput(f"it is not RecordIO: no record header at byte offset {base + pos}", base + pos)
            end = pos + _HEADER.size + (((lrec & _LENGTH_MASK) + 3) & ~3)
            if end - rec_start > max_bytes:
                raise RecordTooLarge(base + rec_start, end - rec_start, max_bytes)
            if len(buf) < end:
                break
            pos = end
            if lrec >> 29 not in (0, 3):           # a first or middle part: the record goes on
                continue
            if pos > max_bytes:                    # this record does not fit in the open batch
                yield cut()
            records, batch_end, rec_start = records + 1, pos, pos
            if single:
                yield cut()
    if pos != len(buf) or rec_start != pos:
        raise BadInput(f"the RecordIO data ends inside a record at byte offset {base + rec_start}", base + rec_start)
    if records:
        yield cut()
