"""The valid values of integer inputs that index an embedding table (token ids).

An id past the end of the table fails in some runtimes (onnxruntime, PyTorch) with a message
about a gather node, and other runtimes do not check it at all. deploykit reads each table's
size from the model and records ``[0, rows - 1]`` on the input's spec, so the probe set, the
server and the CLI refuse an out-of-vocabulary id by name before any runtime sees it.

Only inputs that reach an embedding directly, or through reshapes and casts, get a range;
deploykit does not guess one for other integer inputs (an attention mask, a category code).
"""

from __future__ import annotations

from typing import Any

# torch ops an id passes through unchanged on its way to the embedding
_KEEPS_IDS = {"view", "reshape", "_to_copy", "to", "flatten", "unsqueeze", "squeeze", "clone",
              "contiguous", "alias", "expand", "permute", "transpose", "select", "slice"}


def torch_rows(program: Any) -> dict[int, int]:
    """Rows of the smallest embedding table each input of a ``torch.export`` program indexes.

    Args:
        program: an ``ExportedProgram``.

    Returns:
        Input position -> table rows, for the inputs that index one.
    """
    import torch

    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    rows = {}
    for i, name in enumerate(program.graph_signature.user_inputs):
        found = _embedding_rows(torch.ops.aten.embedding.default, nodes[name])
        if found:
            rows[i] = min(found)
    return rows


def _embedding_rows(embedding: Any, node: Any, depth: int = 0) -> list[int]:
    found = []
    for user in node.users:
        if user.target == embedding and len(user.args) > 1 and user.args[1] is node:
            found.append(int(user.args[0].meta["val"].shape[0]))
        elif depth < 8 and getattr(user.target, "_opname", None) in _KEEPS_IDS \
                and user.args and user.args[0] is node:
            found += _embedding_rows(embedding, user, depth + 1)
    return found


def keras_rows(model: Any) -> dict[int, int]:
    """Rows of the smallest ``Embedding`` each input of a functional Keras model feeds directly.

    Returns:
        Input position -> table rows, for the inputs that feed one.
    """
    import keras

    rows: dict[int, int] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Embedding):
            continue
        try:
            tensor = layer.input
        except (AttributeError, ValueError):  # a shared layer has no single input
            continue
        for i, model_input in enumerate(model.inputs):
            if tensor is model_input:
                rows[i] = min(int(rows.get(i, layer.input_dim)), int(layer.input_dim))
    return rows
