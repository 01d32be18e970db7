"""What a sandbox sends back is always what its content type says."""
import json
import math

import numpy as np

from runtime import codec


def test_nan_and_infinity_become_null_so_the_answer_is_json():
    body, ctype = codec.encode_result({"v": math.nan, "a": np.array([1.5, np.inf, -np.inf]), "n": np.float64("nan")},
                                      None)
    assert ctype == "application/json"
    assert json.loads(body) == {"v": None, "a": [1.5, None, None], "n": None}
    assert b"NaN" not in body and b"Infinity" not in body


def test_the_default_output_fn_follows_the_same_rule():
    body, _ = codec.default_output_fn(np.array([[0.25, np.nan]]), "application/json")
    assert json.loads(body) == [[0.25, None]]


def test_finite_answers_are_unchanged():
    assert codec.encode_result({"x": [1, 2.5, "s"]}, None)[0] == json.dumps({"x": [1, 2.5, "s"]}).encode()


def test_an_estimator_gets_csv_and_json_lists_as_2d_arrays():
    import numpy as np

    from runtime.codec import decode_features

    rows = decode_features(b"5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n", "text/csv")
    assert isinstance(rows, np.ndarray) and rows.shape == (2, 4) and rows.dtype == float
    one = decode_features(b"5.1,3.5,1.4,0.2", "text/csv; charset=utf-8")
    assert one.shape == (1, 4)
    assert decode_features(b"[[1, 2], [3, 4]]", "application/json").shape == (2, 2)
    assert decode_features(b'{"instances": [1]}', "application/json") == {"instances": [1]}   # left as it came
    assert decode_features(b"[[1], [2, 3]]", "application/json") == [[1], [2, 3]]


def test_a_mapping_asked_for_as_csv_is_an_output_error_not_its_repr():
    import pytest

    from runtime.codec import OutputError, encode_result

    with pytest.raises(OutputError, match="a mapping has no CSV form"):
        encode_result({"label": "setosa"}, "text/csv")
    with pytest.raises(OutputError, match="no CSV form"):
        encode_result([{"label": "setosa"}], "text/csv")
    assert encode_result([[1, 2], [3, 4]], "text/csv") == (b"1,2\n3,4\n", "text/csv")



def test_csv_edges_one_column_missing_fields_and_hostile_bodies():
    import numpy as np
    import pytest

    from runtime.codec import UnsupportedMediaType, decode_features

    assert decode_features(b"1\n2\n3\n", "text/csv").shape == (3, 1)        # three samples of one feature
    rows = decode_features(b"1,,3\n4,5,6\n", "text/csv")
    assert rows.shape == (2, 3) and np.isnan(rows[0, 1])
    for hostile in (b"," * (4 << 20), b"1," * (2 << 20), b"a,b\n"):
        with pytest.raises(UnsupportedMediaType):
            decode_features(hostile, "text/csv")


def test_the_fast_csv_path_writes_what_savetxt_writes():
    """Numeric answers skip savetxt's per-row formatting; the text must not change."""
    import io

    def savetxt(value):
        arr = np.asarray(value)
        arr = arr.reshape(1, 1) if arr.ndim == 0 else arr.reshape(-1, 1) if arr.ndim == 1 else arr
        buf = io.StringIO()
        np.savetxt(buf, arr, delimiter=",", fmt="%s")
        return buf.getvalue().encode()

    for value in (np.array([1, 2, 3]), np.array([[1.5, 2.25], [3.0, 1e-300]]), np.array([True, False]),
                  np.array(5), np.array([[0.1, float("nan"), float("inf"), -0.0, 1e20]]),
                  np.array([1, 2], dtype=np.uint8), [1, 2, 3], [[1.0, 2], [3, 4]], np.float64(2.5),
                  np.array([0.1], dtype=np.float32), np.array(["a", "b"]), np.arange(100_000) % 3):
        assert codec.encode_result(value, "text/csv")[0] == savetxt(value), value
    assert codec.encode_result(np.array([]), "text/csv")[0] == b""
