"""DataProcessing without a gateway: SageMaker's JSONPath subset, and the join of CSV and JSON
records with their answers."""
import pytest

from gateway.batch.jsonpath import PathError, compile_path, select
from gateway.batch.processing import Processing
from gateway.batch.records import BadInput

REC = {"id": 7, "features": [1, 2, 3, 4], "meta": {"src": "a", "n": 2}}


@pytest.mark.parametrize("expr,want", [
    ("$", REC),
    ("$.id", 7),
    ("$['id']", 7),
    ("$['id','features']", {"id": 7, "features": [1, 2, 3, 4]}),
    ('$["meta"].src', "a"),
    ("$.features[1:]", [2, 3, 4]),
    ("$.features[-1]", 4),
    ("$.features[0,-1]", [1, 4]),
    ("$.features[0,2:]", [1, 3, 4]),
    ("$.features[:-2]", [1, 2]),
    ("$.meta.*", ["a", 2]),
    ("$.features[*]", [1, 2, 3, 4]),
])
def test_the_documented_subset(expr, want):
    assert select(compile_path(expr), REC) == want


@pytest.mark.parametrize("expr", ["id", "$..id", "$[?(@.id)]", "$.features[1:2:3]", "$[", "$['a',]", "$.a b"])
def test_what_is_not_in_it_is_refused_when_the_job_is_created(expr):
    with pytest.raises(ValueError):
        compile_path(expr)


@pytest.mark.parametrize("expr,record", [("$.missing", REC), ("$[9]", [1, 2]), ("$.id", [1]), ("$[0]", {"a": 1})])
def test_a_path_that_does_not_fit_the_record_says_why(expr, record):
    with pytest.raises(PathError):
        select(compile_path(expr), record)


def test_csv_filter_join_and_output_filter():
    p = Processing.of({"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}, "text/csv",
                      "text/csv", "Line")
    sent, recs = p.prepare(b'a,1,2\n"b,x",3,4\n\n', 100)
    assert sent == b"1,2\n3,4\n" and recs == [["a", "1", "2"], ["b,x", "3", "4"]]
    assert p.finish(b"3.0\n7.0\n", recs, 100) == b'a,3.0\n"b,x",7.0\n'
    with pytest.raises(BadInput, match="answered 1 lines to the 2 records from byte offset 100"):
        p.finish(b"3.0\n", recs, 100)


def test_json_join_adds_the_answer_or_wraps_what_is_not_an_object():
    p = Processing.of({"JoinSource": "Input"}, "application/jsonlines", None, "Line")
    sent, recs = p.prepare(b'{"a": 1}\n[1, 2]\n"s"\n', 0)
    assert sent == b'{"a":1}\n[1,2]\n"s"\n'
    assert p.finish(b'[5, {"p": 1}, "x"]', recs, 0) == (b'{"a":1,"SageMakerOutput":5}\n'
                                                        b'{"SageMakerInput":[1,2],"SageMakerOutput":{"p":1}}\n'
                                                        b'{"SageMakerInput":"s","SageMakerOutput":"x"}\n')
    with pytest.raises(BadInput, match="byte offset 9 is not JSON"):
        p.prepare(b'{"a": 1}\nnot json\n', 0)


def test_nothing_to_do_is_no_processing_and_impossible_combinations_are_refused():
    assert Processing.of({}, "text/csv", None, "Line") is None
    assert Processing.of({"InputFilter": "$", "OutputFilter": "$", "JoinSource": "None"}, None, None, "None") is None
    with pytest.raises(ValueError, match="SplitType Line"):
        Processing.of({"JoinSource": "Input"}, "text/csv", None, "RecordIO")
    with pytest.raises(ValueError, match="CSV and JSON"):
        Processing.of({"InputFilter": "$[1:]"}, "application/x-npy", None, "Line")
