"""DataProcessing: InputFilter before the model, JoinSource and OutputFilter after it, record by
record, as SageMaker documents them.

A CSV record is the array of its columns; a JSON record (application/json or jsonlines, one
value per line) is that value.  With JoinSource Input, a CSV record's answer columns are
appended to its input columns; a JSON object gets the answer as its ``SageMakerOutput``
member, and any other JSON value becomes ``{"SageMakerInput": ..., "SageMakerOutput": ...}``.
The model must answer one line per record it was sent (a JSON array of one answer per record
is accepted too).  Only jobs that ask for it pay for parsing records: the others never come
here.  Pure.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

from gateway.batch import jsonpath
from gateway.batch.records import BadInput

CSV_TYPES = ("text/csv",)
JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines", "application/jsonl")


def media(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    mt = media(content_type)
    return mt in JSON_TYPES or mt.endswith("+json")


@dataclass(frozen=True)
class Processing:
    input_filter: tuple | None
    output_filter: tuple | None
    join: bool
    csv_in: bool
    csv_out: bool

    @classmethod
    def of(cls, data_processing: dict, content_type: str | None, accept: str | None, split: str) -> "Processing | None":
        """The processing a job asks for (None: none, records go to the model untouched); ValueError
        with the reason a combination cannot work."""
        dp = data_processing or {}
        inf, outf = dp.get("InputFilter") or "$", dp.get("OutputFilter") or "$"
        join = dp.get("JoinSource") == "Input"
        if inf == "$" and outf == "$" and not join:
            return None
        if split != "Line":
            raise ValueError("DataProcessing works on records one per line: it needs SplitType Line")
        mt = media(content_type)
        if mt not in CSV_TYPES and not is_json(mt):
            raise ValueError("DataProcessing reads CSV and JSON records only: give ContentType text/csv, "
                             f"application/json or application/jsonlines (not {content_type or 'none'})")
        out = media(accept) or mt                      # answers are written as Accept says, else as read
        csv_in = mt in CSV_TYPES
        return cls(input_filter=None if inf == "$" else jsonpath.compile_path(inf),
                   output_filter=None if outf == "$" else jsonpath.compile_path(outf), join=join,
                   csv_in=csv_in, csv_out=out in CSV_TYPES or (csv_in and not is_json(out)))

    # --- before the model -----------------------------------------------------------------------
    def prepare(self, data: bytes, offset: int) -> tuple[bytes, list]:
        """(what the model is sent, the records as read: kept for the join)."""
        records, sent = [], []
        for line, at in _lines(data, offset):
            record = self._read(line, at)
            records.append(record)
            chosen = record
            if self.input_filter is not None:
                try:
                    chosen = jsonpath.select(self.input_filter, record)
                except jsonpath.PathError as exc:
                    raise BadInput(f"the record at byte offset {at}: InputFilter: {exc}", at) from None
            sent.append(self._write(chosen, self.csv_in))
        return b"".join(s + b"\n" for s in sent), records

    def _read(self, line: bytes, at: int):
        text = line.decode("utf-8", errors="replace")
        if self.csv_in:
            return next(csv.reader([text]), [])
        try:
            return json.loads(text)
        except ValueError:
            raise BadInput(f"the record at byte offset {at} is not JSON", at) from None

    # --- after it ----------------------------------------------------------------------------------
    def finish(self, answer: bytes, records: list, offset: int) -> bytes:
        """The output lines of one request: each record's answer, joined and filtered."""
        answers = _answers(answer, len(records), offset)
        out = []
        for record, ans in zip(records, answers, strict=True):
            value = self._answer_value(ans)
            if self.join:
                if self.csv_in:
                    value = list(record) + (value if isinstance(value, list) else [value])
                elif isinstance(record, dict):
                    value = dict(record, SageMakerOutput=value)
                else:
                    value = {"SageMakerInput": record, "SageMakerOutput": value}
            if self.output_filter is not None:
                try:
                    value = jsonpath.select(self.output_filter, value)
                except jsonpath.PathError as exc:
                    raise BadInput(f"the answer to the records from byte offset {offset}: OutputFilter: {exc}",
                                   offset) from None
            out.append(self._write(value, self.csv_out) + b"\n")
        return b"".join(out)

    def _answer_value(self, ans):
        if not isinstance(ans, str):
            return ans                                 # an element of a JSON array answer
        if self.csv_out or (self.csv_in and not is_json_text(ans)):
            return next(csv.reader([ans]), [])
        try:
            return json.loads(ans)
        except ValueError:
            return ans

    @staticmethod
    def _write(value, as_csv: bool) -> bytes:
        if as_csv:
            if not isinstance(value, list):
                value = [value]
            buf = io.StringIO()
            csv.writer(buf, lineterminator="").writerow(
                [json.dumps(v) if isinstance(v, (dict, list)) else v for v in value])
            return buf.getvalue().encode()
        return json.dumps(value, separators=(",", ":")).encode()


def is_json_text(text: str) -> bool:
    return text[:1] in ("{", "[", '"')


def _lines(data: bytes, offset: int):
    at = offset
    for line in data.split(b"\n"):
        stripped = line.rstrip(b"\r")
        if stripped.strip():
            yield stripped, at
        at += len(line) + 1


def _answers(answer: bytes, n: int, offset: int) -> list:
    text = answer.decode("utf-8", errors="replace")
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) == n:
        return lines
    if len(lines) == 1 and n != 1:                     # one JSON array, an answer per record
        try:
            doc = json.loads(lines[0])
        except ValueError:
            doc = None
        if isinstance(doc, list) and len(doc) == n:
            return doc
    raise BadInput(f"the model answered {len(lines)} lines to the {n} records from byte offset {offset}: "
                   "JoinSource and OutputFilter need one answer per record", offset)
