"""ONNX's ``LSTM`` and ``GRU`` as ``keras.ops``, unrolled over a fixed sequence length.

The functions take tensors of one direction (``x``: ``[seq, batch, input]``; ``w``, ``r``,
``b`` as ONNX stores them for that direction) and return the hidden states of every step,
``[seq, batch, hidden]``, and the last state(s). :mod:`.ops` handles layouts, directions
and the attributes these do not cover.
"""

from __future__ import annotations

from typing import Any


def _steps(ops, x, w, b):
    """The input's projection for every step at once: ``x @ w.T + b``."""
    return ops.add(ops.matmul(x, ops.transpose(w)), b)


def lstm(ops, x, w, r, b, h, c, seq: int, hidden: int) -> tuple[Any, Any, Any]:
    """Gates in ONNX's order: input, output, forget, cell."""
    xw = _steps(ops, x, w, b[:4 * hidden] + b[4 * hidden:] if b is not None else 0.0)
    h = ops.zeros_like(xw[0, :, :hidden]) if h is None else h
    c = ops.zeros_like(h) if c is None else c
    rt = ops.transpose(r)
    ys = []
    for t in range(seq):
        g = ops.add(xw[t], ops.matmul(h, rt))
        i, o, f, cell = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = ops.add(ops.multiply(ops.sigmoid(f), c),
                    ops.multiply(ops.sigmoid(i), ops.tanh(cell)))
        h = ops.multiply(ops.sigmoid(o), ops.tanh(c))
        ys.append(h)
    return ops.stack(ys), h, c


def gru(ops, x, w, r, b, h, seq: int, hidden: int, linear_before_reset: bool):
    """Gates in ONNX's order: update, reset, hidden."""
    wb = b[:3 * hidden] if b is not None else 0.0
    rb = b[3 * hidden:] if b is not None else ops.zeros_like(w[:, 0])
    xw = _steps(ops, x, w, wb)
    h = ops.zeros_like(xw[0, :, :hidden]) if h is None else h
    rt = ops.transpose(r)
    ys = []
    for t in range(seq):
        xz, xr, xh = (xw[t][:, k * hidden:(k + 1) * hidden] for k in range(3))
        hr = ops.add(ops.matmul(h, rt[:, :2 * hidden]), rb[:2 * hidden])
        z = ops.sigmoid(ops.add(xz, hr[:, :hidden]))
        reset = ops.sigmoid(ops.add(xr, hr[:, hidden:]))
        if linear_before_reset:
            hh = ops.multiply(reset, ops.add(ops.matmul(h, rt[:, 2 * hidden:]), rb[2 * hidden:]))
        else:
            hh = ops.add(ops.matmul(ops.multiply(reset, h), rt[:, 2 * hidden:]), rb[2 * hidden:])
        cand = ops.tanh(ops.add(xh, hh))
        h = ops.add(ops.multiply(ops.subtract(1.0, z), cand), ops.multiply(z, h))
        ys.append(h)
    return ops.stack(ys), h
