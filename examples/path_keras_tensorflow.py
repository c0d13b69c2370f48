"""The keras-tensorflow path of the flowchart, end to end through deploykit's Python API.

Trains on the built-in digits data, writes a model folder, reloads it with its own
framework and checks it predicts what the trained model did, then exports it to every
deployment target the conversion graph reaches and verifies each artifact in its runtime.

    python examples/path_keras_tensorflow.py [--data digits] [--out DIR] [--epochs N] [--to all]
"""

import argparse

import numpy as np

import deploykit
from deploykit.training import predict_in_worker, read_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="digits")
parser.add_argument("--to", default="all", help="export targets ('all' or a comma list)")
parser.add_argument("--out", default="models/digits-keras-tensorflow")
parser.add_argument("--epochs", type=int, default=None)
args = parser.parse_args()

# Worker processes (Keras training, reloading, converters) are shared by the steps below.
with deploykit.workers():
    result = deploykit.train("keras-tensorflow", args.data, args.out, epochs=args.epochs)
    print("test metrics:", result.metrics["test"])

    X, y, reference = read_test_split(args.out)
    reloaded = predict_in_worker(args.out, X)  # loaded from its files, in a worker process
    for name, ref in reference.items():
        np.testing.assert_allclose(reloaded[name], ref, rtol=1e-5, atol=1e-6)
    print(f"reloaded {args.out}: outputs {sorted(reference)} match the trained model")

    bundle = args.out.rstrip("/") + "-bundle"
    report = deploykit.export(args.out, args.to, out=bundle)
    for cell in report.cells:
        print(f"{cell.target:12s} {cell.status:5s} {cell.reason or ''}")
    assert report.ok, "an artifact failed parity"
    assert deploykit.verify(bundle).ok  # re-check from the bundle alone
    print(f"bundle {bundle}: every exported artifact predicts like the original")
