"""The app a user would otherwise write: Flask + onnxruntime, nothing else (benchmark
baseline), as a gunicorn app factory:

    gunicorn -w 2 'baseline_app:create("model.onnx", tuned=True)'

``tuned``: onnxruntime with one intra-op thread and its spinning off (the knob a user who
reads the onnxruntime docs turns); untuned: onnxruntime's defaults.
"""

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request


def create(model: str, tuned: bool = True) -> Flask:
    opts = ort.SessionOptions()
    if tuned:
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    app = Flask("baseline")

    @app.post("/predict")
    def predict():
        x = np.asarray(request.get_json()["instances"], dtype=np.float32)
        outputs = session.run(None, {name: x})
        return jsonify(predictions=outputs[-1].tolist())

    return app
