"""The app a user would otherwise write: Flask + onnxruntime, nothing else (benchmark baseline).

    python benchmarks/baseline_app.py MODEL.onnx PORT
"""

import sys

import numpy as np
import onnxruntime as ort
import waitress
from flask import Flask, jsonify, request

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
app = Flask("baseline")


@app.post("/predict")
def predict():
    x = np.asarray(request.get_json()["instances"], dtype=np.float32)
    outputs = session.run(None, {name: x})
    return jsonify(predictions=outputs[-1].tolist())


waitress.serve(app, host="127.0.0.1", port=int(sys.argv[2]), threads=4)
