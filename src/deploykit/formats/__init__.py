"""One module per format: the graph edges *into* it and its Runner.

Importing this package registers every node, edge and runner; no module imports a
framework at top level, so this stays cheap.
"""

from deploykit.formats import (  # noqa: F401  (registration on import)
    executorch,
    keras,
    onnx,
    saved_model,
    sklearn,
    tfjs,
    tflite,
    torch_program,
    torchscript,
    web,
)
