"""Dynamic batching (serve --batch-window-ms): concurrent requests become one runtime call,
each gets its own rows back, and one request's failure is not another's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from deploykit.serve.batching import Batcher


def _model(calls: list[int]):
    def predict(arrays):
        x = arrays["x"]
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative rows")
        return {"y": x.sum(axis=1, keepdims=True) * 2}
    return predict


def _concurrently(batcher, inputs):
    results, start = [None] * len(inputs), threading.Barrier(len(inputs))

    def call(i):
        start.wait()
        try:
            results[i] = batcher({"x": inputs[i]})
        except Exception as e:
            results[i] = e
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return results


def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    calls: list[int] = []
    rng = np.random.default_rng(0)
    inputs = [rng.random((n, 3)) for n in (1, 2, 3, 1, 4, 2)]
    results = _concurrently(Batcher(_model(calls), window_s=0.2, max_rows=1000), inputs)
    for x, r in zip(inputs, results, strict=True):
        np.testing.assert_allclose(r["y"], x.sum(axis=1, keepdims=True) * 2)
    assert sum(calls) == 13 and len(calls) < len(inputs)  # coalesced


def test_a_full_batch_runs_without_waiting_out_the_window():
    calls: list[int] = []
    inputs = [np.ones((5, 3))] * 4
    results = _concurrently(Batcher(_model(calls), window_s=30, max_rows=5), inputs)
    assert all(r["y"].shape == (5, 1) for r in results)  # (a 30 s window would time out)


def test_rows_of_another_shape_run_apart_and_a_failing_batch_fails_only_its_requests():
    calls: list[int] = []
    inputs = [np.ones((1, 3)), np.ones((2, 4)), -np.ones((1, 3)), np.ones((1, 4))]
    results = _concurrently(Batcher(_model(calls), window_s=0.2, max_rows=1000), inputs)
    # the 3-wide rows share a batch with the negative row, so both get its error
    assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError)
    np.testing.assert_allclose(results[1]["y"], np.full((2, 1), 8.0))
    np.testing.assert_allclose(results[3]["y"], np.full((1, 1), 8.0))


@pytest.mark.parametrize("window", ["-1", "abc", "5000"])
def test_a_bad_window_is_refused(window, capsys):
    from deploykit.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "b", "--batch-window-ms", window])
    assert "milliseconds from 0 to 1000" in capsys.readouterr().err
