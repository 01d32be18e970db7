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
