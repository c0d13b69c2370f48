"""The tensorflow path of the flowchart, end to end through deploykit's Python API.

Trains on the built-in digits data, writes a model folder, reloads it with its own
framework and checks the reloaded model predicts what the trained one did.

    python examples/path_tensorflow.py [--data digits] [--out models/digits-tensorflow] [--epochs N]
"""

import argparse

import numpy as np

import deploykit
from deploykit.training import predict_in_worker, read_test_split

parser = argparse.ArgumentParser()
parser.add_argument("--data", default="digits")
parser.add_argument("--out", default="models/digits-tensorflow")
parser.add_argument("--epochs", type=int, default=None)
args = parser.parse_args()

result = deploykit.train("tensorflow", args.data, args.out, epochs=args.epochs)
print("test metrics:", result.metrics["test"])

X, y, reference = read_test_split(args.out)
reloaded = predict_in_worker(args.out, X)  # a fresh process, as a deployment would load it
for name, ref in reference.items():
    np.testing.assert_allclose(reloaded[name], ref, rtol=1e-5, atol=1e-6)
print(f"reloaded {args.out}: outputs {sorted(reference)} match the trained model")
