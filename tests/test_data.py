from __future__ import annotations

import numpy as np
import pytest

from deploykit.data import BUILTIN, load_dataset, split_dataset
from deploykit.errors import DataError, InputError


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtins_load_from_bundled_files(name):
    from sklearn import datasets

    ds = load_dataset(name)
    raw = getattr(datasets, BUILTIN[name][0])()
    assert ds.X.dtype == np.float32 and ds.X.shape == raw.data.shape
    np.testing.assert_allclose(ds.X, raw.data, rtol=1e-6)
    assert ds.task == BUILTIN[name][1]
    if ds.task == "classification":
        assert ds.y.dtype == np.int64 and len(ds.labels) == len(np.unique(raw.target))
    assert len(ds.feature_names) == ds.n_features


def test_digits_is_image_data():
    ds = load_dataset("digits")
    assert ds.image_shape == (8, 8, 1) and ds.n_features == 64 and ds.n_outputs == 10


def test_split_is_stratified_disjoint_and_seeded():
    ds = load_dataset("digits")
    a, b, c = split_dataset(ds, seed=0), split_dataset(ds, seed=0), split_dataset(ds, seed=1)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_test, c.X_test)
    assert len(a.X_train) + len(a.X_val) + len(a.X_test) == len(ds.X)
    assert abs(len(a.X_test) / len(ds.X) - 0.2) < 0.01
    full = np.bincount(ds.y) / len(ds.y)
    for y in (a.y_train, a.y_val, a.y_test):
        assert np.abs(np.bincount(y, minlength=10) / len(y) - full).max() < 0.03
    rows = {r.tobytes() for r in a.X_test}
    # digits has a few duplicate images; stratified splits must still be mostly disjoint
    assert sum(r.tobytes() in rows for r in a.X_train) < 10


def _csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_csv_classification_with_string_labels(tmp_path):
    rows = "\n".join(f"{i},{i * 2.5},{'cat' if i % 2 else 'dog'}" for i in range(30))
    ds = load_dataset(_csv(tmp_path, "a,b,kind\n" + rows + "\n"), label_column="kind")
    assert ds.task == "classification" and ds.labels == ("cat", "dog")
    assert ds.feature_names == ("a", "b") and ds.X.shape == (30, 2)
    assert ds.y[0] == 1 and ds.y[1] == 0  # row 0 is 'dog'


def test_numeric_classes_are_classes_by_value(tmp_path):
    """A label column of 0/1 with some rows written 0.0/1.0 was four classes."""
    rows = "\n".join(f"{i},{(i % 2) if i % 5 else float(i % 2)}" for i in range(30))
    assert "1.0" in rows and "\n1,1\n" in "\n" + rows + "\n"
    ds = load_dataset(_csv(tmp_path, "a,y\n" + rows), label_column="y")
    assert ds.task == "classification" and ds.labels == ("0", "1")
    assert ds.y.tolist() == [i % 2 for i in range(30)]


def test_csv_numeric_target_is_regression_when_continuous(tmp_path):
    rows = "\n".join(f"{i},{i * 0.37 + 0.1}" for i in range(40))
    ds = load_dataset(_csv(tmp_path, "x,y\n" + rows), label_column="y")
    assert ds.task == "regression" and ds.y.dtype == np.float32
    ds2 = load_dataset(_csv(tmp_path, "x,y\n" + rows), label_column="y", task="classification")
    assert ds2.task == "classification" and len(ds2.labels) == 40


@pytest.mark.parametrize("content, label_column, words", [
    ("", "y", "the file is empty"),
    ("a,b,y\n", "y", "no data rows"),
    ("a,b,y\n1,2,0\n3,4,1\n", "z", "no column 'z' (columns: a, b, y)"),
    ("a,b,y\n1,,0\n3,,1\n", "y", "column 'b' holds nothing but gaps ('')"),
    ("a,b,y\n1,?,0\n3,n/a,1\n", "y", "column 'b' holds nothing but gaps ('?', 'n/a')"),
    ("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(30)) + ".,1\n", "y",
     "column 'a', line 32 is '.' in a column of numbers: correct it, or leave it empty"),
    ("a,y\n1,0.5\n2,?\n3,1.5\n", "y", "label column 'y', line 3 is '?', a row without a "
                                       "label: drop such rows"),
    ("a,y\n1,0\n\n\n2,\n3,1\n", "y", "label column 'y', line 5 is '', a row without a label"),
    ("a,b,y\n\n\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(30)) + "1,.,0\n", "y",
     "column 'b', line 34 is '.'"),  # the file's line, blank lines counted
    ("a,b,y\n" + "".join(f'{i},"1,{i:03}",{i % 2}\n' for i in range(8)), "y",
     "column 'b' holds numbers written with ',' or '%' (line 2: '1,000'): write them as plain"),
    ("a,b,y\n" + "".join(f"{i},{i}%,{i % 2}\n" for i in range(8)), "y",
     "column 'b' holds numbers written with ',' or '%'"),
    (b"a,b,y\n1,2,0\n3,Z\xfcrich,1\n", "y", "line 3 is not UTF-8 text; save the file as UTF-8"),
    ("a,b,y\n1,2,0\n3,4\n", "y", "line 3 has 2 fields"),
    ("a,b,y\n1,2,same\n3,4,same\n", "y", "only one class"),
    ("a,b,y\n1,2,0\n3,4,1\n", None, "say which column holds the labels with --label-column"),
    ("a,b,y\n1,2,0\n1e39,4,1\n", "y", "column 'a', line 3 is '1e39': infinite or "
                                    "beyond float32's range"),  # was "NaN or Inf": it has none
    ("a,b,y\n1,2,0\n-inf,4,1\n", "y", "column 'a', line 3 is '-inf': infinite"),
    ("a;b;y\n1;2;0\n3;4;1\n", "y", "the file looks separated by ';'"),
    ("a,y,c,y\n1,0,2,0\n3,1,4,1\n", "y", "the header names 'y' more than once"),
])
def test_bad_csv_gives_clear_errors(tmp_path, content, label_column, words):
    with pytest.raises(DataError) as e:
        load_dataset(_csv(tmp_path, content), label_column=label_column)
    assert words in str(e.value)


def test_a_csv_column_of_words_holds_each_words_position_among_its_sorted_words(tmp_path):
    """A table's text column (a city, a class) was "not a number". Its words are sorted, an
    empty cell is the word "" and stands for a missing value too; X holds positions."""
    cities = ["rome", "oslo", "", "lima", "oslo", "rome", "", "lima"]
    rows = "\n".join(f"{c},{i * 1.5},{i % 2}" for i, c in enumerate(cities))
    ds = load_dataset(_csv(tmp_path, "city,size,y\n" + rows), label_column="y")
    assert [(w.column, w.name, w.words) for w in ds.words] == [(0, "city", ("", "lima", "oslo",
                                                                             "rome"))]
    assert ds.X[:, 0].tolist() == [["", "lima", "oslo", "rome"].index(c) for c in cities]
    assert ds.X[:, 1].tolist() == [i * 1.5 for i in range(8)]
    city = ds.words[0]
    assert city.code(None) == city.code(float("nan")) == city.code("") == 0.0
    with pytest.raises(InputError, match="unknown word 'paris'"):
        city.code("paris")
    assert ds.columns == ("city", "size")  # a CSV's model takes rows by column name
    assert load_dataset("iris").columns is None and not load_dataset("iris").words


def test_gaps_in_a_csv_column_of_numbers_take_its_median(tmp_path):
    """Titanic's ages have gaps: "line 5 is empty" stopped every table like it. A gap (an
    empty cell, n/a, ?, nan) takes the median of the column's numbers, which the signature
    keeps so a missing value later takes it too."""
    ages = ["22", "", "38", "n/a", "26", "?", "35", "nan"]
    rows = "\n".join(f"{a},{i},{i % 2}" for i, a in enumerate(ages))
    ds = load_dataset(_csv(tmp_path, "age,n,y\n" + rows), label_column="y")
    median = float(np.median([22, 38, 26, 35]))
    assert [(f.column, f.name, f.value) for f in ds.filled] == [(0, "age", median)]
    assert ds.X[:, 0].tolist() == [median if a in ("", "n/a", "?", "nan") else float(a)
                                   for a in ages]
    assert not ds.words and f"gaps filled with their column's median: age ({median:g})" in ds.note


def test_a_column_of_a_word_per_row_is_named_as_one_no_new_row_can_use(tmp_path):
    rows = "\n".join(f"name{i},{'ab'[i % 2]},{i % 2}" for i in range(12))
    ds = load_dataset(_csv(tmp_path, "name,kind,y\n" + rows), label_column="y")
    assert "nearly a word per row in name (a name, an id?)" in ds.note
    assert "kind" not in ds.note.split("nearly")[1]


def test_a_spreadsheets_trailing_empty_columns_and_a_spaced_label_name_are_read(tmp_path):
    """Excel exports "x,y,," with nothing under the last two: "the header names '' more
    than once"; --label-column ' y ' was "no column ' y '"."""
    rows = "".join(f"{i},{i % 2},,\n" for i in range(12))
    ds = load_dataset(_csv(tmp_path, "x,y,,\n" + rows), label_column=" y ")
    assert ds.feature_names == ("x",) and ds.X[:, 0].tolist() == list(range(12))


def test_words_a_table_reader_takes_for_gaps_keep_a_gap_from_standing_for_them(tmp_path):
    """pandas' read_csv reads "NA" (North America here) as NaN, as it does an empty cell: a
    missing value stood for the empty cell and predicted every "NA" row as a gap. Now it is
    refused and says why; a mostly numeric column of ticket codes is words, not an error."""
    regions = ["NA", "EU", "", "EU", "NA", "APAC"]
    tickets = ["1201", "PC 17", "3303", "4404", "5505", "A/5 21"]
    rows = "\n".join(f"{r},{t},{i % 2}" for i, (r, t) in enumerate(zip(regions, tickets)))
    ds = load_dataset(_csv(tmp_path, "region,ticket,y\n" + rows), label_column="y")
    region, ticket = ds.words
    assert region.code("") == sorted(set(regions)).index("")
    with pytest.raises(InputError, match="its words include 'NA', which pandas' read_csv "
                                         "reads as missing: read the file with "
                                         "keep_default_na=False"):
        region.code(float("nan"))
    assert ticket.words == tuple(sorted(tickets)) and ticket.missing is None
    assert 'knows "", APAC, EU, NA' in _refused(region, "paris")


def _refused(column, word) -> str:
    with pytest.raises(InputError) as e:
        column.code(word)
    return str(e.value)


def test_a_label_column_for_data_that_names_its_own_is_refused(tmp_path):
    """``--label-column`` with an .npz or a builtin dataset was dropped without a word."""
    np.savez(tmp_path / "d.npz", X=np.zeros((20, 2)), y=np.arange(20) % 2)
    for data in (tmp_path / "d.npz", "iris"):
        with pytest.raises(DataError, match="a label column is for CSV files"):
            load_dataset(data, label_column="price")


def test_missing_and_unknown_data(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_dataset(tmp_path / "nope.csv", label_column="y")
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="regression dataset, not classification"):
        load_dataset("diabetes", task="classification")


def test_npz_round_trip_and_errors(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.arange(40) % 2
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "ok.npz")
    assert ds.task == "classification" and ds.X.shape == (40, 3) and ds.labels == ("0", "1")
    np.savez(tmp_path / "keys.npz", features_wrong=X, y=y)
    with pytest.raises(DataError, match="expected arrays 'X' and 'y'"):
        load_dataset(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", X=X, y=np.array([object()] * 40, dtype=object))
    with pytest.raises(DataError, match="without pickle"):
        load_dataset(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(tmp_path / "junk.npz")


def test_too_few_per_class_for_a_stratified_split(tmp_path):
    rows = "\n".join(f"{i},{'a' if i < 20 else 'b'}" for i in range(22))
    ds = load_dataset(_csv(tmp_path, "x,y\n" + rows), label_column="y")
    with pytest.raises(DataError, match="class 'b' has 2 samples"):
        split_dataset(ds)


def test_a_sample_npz_of_inputs_by_name_is_not_taken_for_its_x(tmp_path):
    """An .npz of a model's two inputs ``x`` and ``mask`` was read as the one array ``x``
    (the model then refused it for lacking ``mask``); a test split (``X`` beside ``y``)
    and a lone array are still the array."""
    from deploykit.errors import DataError
    from deploykit.sources import read_sample

    x, mask = np.ones((3, 4), np.float32), np.zeros((3, 4), np.int64)
    np.savez(tmp_path / "two.npz", x=x, mask=mask)
    got = read_sample(tmp_path / "two.npz")
    assert sorted(got) == ["mask", "x"] and got["mask"].dtype == np.int64
    np.savez(tmp_path / "split.npz", X=x, y=np.arange(3), **{"ref.probabilities": x})
    np.savez(tmp_path / "one.npz", tokens=mask)
    assert read_sample(tmp_path / "split.npz").shape == (3, 4)
    assert read_sample(tmp_path / "one.npz").dtype == np.int64
    (tmp_path / "script.py").write_text("print('not an array')\n")
    with pytest.raises(DataError, match="not a .npy or .npz file") as e:
        read_sample(tmp_path / "script.py", "--sample")
    assert "pickle" not in str(e.value)
