"""The tiny server: every artifact of a bundle behind the Open Inference Protocol v2 (the
protocol Triton and KServe speak), a simple ``/predict``, and live parity on ``/validate``."""

from deploykit.serve.app import create_app

__all__ = ["create_app"]
