"""How /predict and /validate bodies map to named inputs (one input, or several by name in
TF Serving's row and column formats), and the 400s that name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import InputError
from deploykit.serve.app import ApiError, _request_inputs
from deploykit.signature import TensorSpec

IDS, MASK = TensorSpec("input_ids", "int64", (None, 3)), TensorSpec("attention_mask", "int64",
                                                                    (None, 3))


def test_one_input_takes_instances():
    got = _request_inputs({"instances": [[1.0, 2.0]]}, [TensorSpec("x", "float32", (None, 2))], 8)
    assert list(got) == ["x"] and got["x"].dtype == np.float32 and got["x"].shape == (1, 2)


def test_one_input_takes_rows_of_objects_too():
    """The README's "rows of {input: value} objects" (TF Serving takes them for one input);
    they were a 400 "data must be a (nested) list of numbers"."""
    x = [TensorSpec("x", "float32", (None, 2))]
    got = _request_inputs({"instances": [{"x": [1.0, 2.0]}, {"x": [3.0, 4.0]}]}, x, 8)
    np.testing.assert_array_equal(got["x"], [[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ApiError, match=r"missing \['x'\], unknown \['y'\]"):
        _request_inputs({"instances": [{"y": [1.0, 2.0]}]}, x, 8)


def test_several_inputs_as_columns_or_rows_of_objects_agree():
    cols = {"input_ids": [[5, 6, 0], [7, 0, 0]], "attention_mask": [[1, 1, 0], [1, 0, 0]]}
    rows = [{k: v[i] for k, v in cols.items()} for i in range(2)]
    by_col = _request_inputs({"inputs": cols}, [IDS, MASK], 8)
    by_row = _request_inputs({"instances": rows}, [IDS, MASK], 8)
    assert list(by_col) == ["input_ids", "attention_mask"]
    for k in cols:
        np.testing.assert_array_equal(by_col[k], np.asarray(cols[k]))
        np.testing.assert_array_equal(by_row[k], by_col[k])


@pytest.mark.parametrize("body, says", [
    ({"instances": [[5, 6, 0]]}, "takes 2 inputs ['input_ids', 'attention_mask']"),
    ({"inputs": {"input_ids": [[5, 6, 0]]}}, "missing ['attention_mask']"),
    ({"inputs": {"input_ids": [[5]], "attention_mask": [[1]], "ids": [[1]]}}, "unknown ['ids']"),
    ({"inputs": {"input_ids": [[5.5]], "attention_mask": [[1]]}}, "input 'input_ids': int64 data"),
    ({}, "send {\"instances\""),
    ({"instances": {"input_ids": [5, 6, 0]}}, "'instances' must be a list of rows, got an object"),
])
def test_bad_bodies_are_400s_naming_the_problem(body, says):
    with pytest.raises(ApiError) as e:
        _request_inputs(body, [IDS, MASK], 8)
    assert e.value.status == 400 and says in str(e.value), str(e.value)


def test_ids_too_large_for_the_dtype_are_refused_not_wrapped_into_other_ids():
    spec = TensorSpec("input_ids", "int32", (None, 2))
    assert _request_inputs({"instances": [[2**31 - 1, 0]]}, [spec], 8)["input_ids"][0, 0] == \
        2**31 - 1
    with pytest.raises(ApiError) as e:
        _request_inputs({"instances": [[2**32 + 5, 0]]}, [spec], 8)  # would wrap to 5
    assert e.value.status == 400 and "do not fit int32" in str(e.value), str(e.value)


@pytest.mark.parametrize("value", [2**63, 2.0**63, 2**64 + 7, -2**63 - 1, 1e300])
def test_int64_ids_past_its_range_are_refused_not_wrapped(value):
    """2**63 arrives as a float (or an object array past 2**64); int64's max, 2**63 - 1, is
    2**63 as a float, so a check against it let 2**63 through and the cast made it -2**63."""
    spec = [TensorSpec("ids", "int64", (None, 2))]
    assert _request_inputs({"instances": [[2**63 - 1, -2**63]]}, spec, 8)["ids"].tolist() == \
        [[2**63 - 1, -2**63]]
    # beside a whole number spelled 2.0 (so numpy reads the row as floats), the max still fits
    assert _request_inputs({"instances": [[2**63 - 1, 2.0]]}, spec, 8)["ids"].tolist() == \
        [[2**63 - 1, 2]]
    with pytest.raises(ApiError) as e:
        _request_inputs({"instances": [[value, 1]]}, spec, 8)
    assert e.value.status == 400 and "do not fit int64" in str(e.value), str(e.value)


X2 = [TensorSpec("x", "float32", (None, 2))]


@pytest.mark.parametrize("body, says", [
    ({"instances": [[1.0, True]]}, "list of numbers"),  # numpy would make true 1.0
    ({"instances": [["1.5", 2.0]]}, "list of numbers"),  # and "1.5" 1.5
    ({"instances": [[1e39, 0.0]]}, "do not fit float32"),  # a cast would make it Inf
    ({"instances": [[]]}, "axis of size 0"),
    ({"instances": [[1.0, 2.0]], "inputs": {"x": [[1.0, 2.0]]}}, "not both"),
])
def test_what_json_allows_but_the_input_cannot_take_is_a_400(body, says):
    with pytest.raises(ApiError) as e:
        _request_inputs(body, X2, 8)
    assert e.value.status == 400 and says in str(e.value), str(e.value)


def test_whole_numbers_are_numbers_whatever_their_json_spelling():
    # 10**30 is a JSON number a float input takes (numpy alone makes an object array of it)
    assert _request_inputs({"instances": [[10**30, 1]]}, X2, 8)["x"][0, 0] == np.float32(1e30)
    ids = [TensorSpec("ids", "int64", (None, 2))]
    got = _request_inputs({"instances": [[2.0, 3]]}, ids, 8)["ids"]  # 2.0 is an integer
    assert got.dtype == np.int64 and got.tolist() == [[2, 3]]
    flags = [TensorSpec("on", "bool", (None, 2))]
    assert _request_inputs({"instances": [[True, False]]}, flags, 8)["on"].tolist() == \
        [[True, False]]
    with pytest.raises(ApiError):
        _request_inputs({"instances": [[1, 0]]}, flags, 8)  # numbers are not booleans


def test_null_in_a_column_trained_with_gaps_takes_its_fill_and_the_schema_says_so():
    """A model trained on a table with gaps (a CSV's empty cells): null there was a 400
    "data must be a (nested) list of numbers"; it takes the training data's median."""
    from deploykit.serve.openapi import _row
    from deploykit.words import FilledColumn

    spec = TensorSpec("x", "float32", (None, 2), columns=("age", "fare"),
                      filled=(FilledColumn(0, "age", 28.5),))
    got = _request_inputs({"instances": [[None, 7.25]]}, [spec], 8)
    assert spec.validate(got["x"]).tolist() == [[28.5, 7.25]]
    got = _request_inputs({"instances": [{"age": None, "fare": 8.0}]}, [spec], 8)
    assert spec.validate(got["x"]).tolist() == [[28.5, 8.0]]
    with pytest.raises(InputError, match=r"contains NaN or Inf \(column 'fare', row 0\)"):
        spec.validate(_request_inputs({"instances": [[1.0, None]]}, [spec], 8)["x"])
    age, fare = _row(spec)["prefixItems"]
    assert "null" in age["type"] and "null" not in fare["type"]
