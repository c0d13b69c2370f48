"""The flowchart's paths, named once. In deploykit a *flow* is how a model is trained (one
path through the classic Python AI flowchart); a *path* is always a file-system path."""

FLOWS = ("sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch")
DEEP_FLOWS = FLOWS[1:]
AUTO = "auto"  # the flowchart's "need deep learning?" decision between them
TRAINABLE = (*FLOWS, AUTO)
# Epochs of the deep flows that reach their accuracy bar on the builtin data.
DEFAULT_EPOCHS = {"mlp": 60, "cnn": 40}
