"""The PyTorch core path: an ``nn.Module``, an explicit training loop, eval mode.

Standardisation (and, for regression, un-scaling of the output) lives in the module as
buffers, so the saved model takes raw features. Saved twice: ``state_dict.pt`` plus the
architecture in the card (loaded with ``weights_only=True``), and ``model.pt2``, a
``torch.export`` program with a dynamic batch dimension.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit._progress import Reporter
from deploykit.data import Split
from deploykit.flows import DEFAULT_EPOCHS
from deploykit.training.common import (
    FitResult,
    TrainConfig,
    batches,
    epoch_status,
    metrics,
    output_name,
    primary_metric,
    scaling,
    use_cnn,
)

STATE_FILE = "state_dict.pt"
PROGRAM_FILE = "model.pt2"


def build(arch: dict[str, Any]):
    """Build the network described by ``arch`` (as stored in the card)."""
    torch = require("torch", purpose="for the torch path")
    nn = torch.nn

    class DeployNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            f, k = arch["n_features"], arch["n_outputs"]
            self.classify = arch["task"] == "classification"
            self.image_shape = arch["image_shape"]
            self.register_buffer("mean", torch.zeros(f))
            self.register_buffer("std", torch.ones(f))
            self.register_buffer("y_mean", torch.zeros(()))
            self.register_buffer("y_std", torch.ones(()))
            if self.image_shape:
                h, w, c = self.image_shape
                self.body = nn.Sequential(
                    nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(32 * (h // 2) * (w // 2), 64), nn.ReLU(),
                    nn.Dropout(0.2), nn.Linear(64, k))
            else:
                self.body = nn.Sequential(
                    nn.Linear(f, 128), nn.ReLU(), nn.Dropout(0.1),
                    nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, k))

        def logits(self, x):
            z = (x - self.mean) / self.std
            if self.image_shape:
                h, w, c = self.image_shape
                z = z.reshape(-1, h, w, c).permute(0, 3, 1, 2)  # NHWC features -> NCHW
            return self.body(z)

        def forward(self, x):
            z = self.logits(x)
            return torch.softmax(z, dim=1) if self.classify else z * self.y_std + self.y_mean

    return DeployNet()


def fit(split: Split, workdir: Path, cfg: TrainConfig) -> FitResult:
    torch = require("torch", purpose="for the torch path")
    torch.manual_seed(cfg.seed)
    ds = split.dataset
    cnn = use_cnn(split, cfg.arch)
    arch = {"n_features": ds.n_features, "n_outputs": ds.n_outputs, "task": ds.task,
            "image_shape": list(ds.image_shape) if cnn else None}
    model = build(arch)
    sc = scaling(split)
    with torch.no_grad():
        model.mean.copy_(torch.from_numpy(sc["mean"]))
        model.std.copy_(torch.from_numpy(sc["std"]))
        model.y_mean.fill_(sc["y_mean"])
        model.y_std.fill_(sc["y_std"])
    epochs = cfg.epochs or DEFAULT_EPOCHS["cnn" if cnn else "mlp"]
    _train(model, split, epochs, cfg)
    model.eval()
    torch.save(model.state_dict(), workdir / STATE_FILE)
    _save_program(model, workdir / PROGRAM_FILE, ds.n_features)
    kind = "cnn" if cnn else "mlp"
    return FitResult(
        framework="torch", files={"state_dict": STATE_FILE, "program": PROGRAM_FILE},
        val_outputs=predict(model, split.X_val, ds.task),
        probe_outputs=predict(model, split.X_probe, ds.task),
        model={"kind": kind, "architecture": arch, "epochs": epochs,
               "summary": str(model.body).replace("\n", " ")[:500]},
        versions={"torch": torch.__version__})


def _train(model, split: Split, epochs: int, cfg: TrainConfig) -> None:
    torch = require("torch")
    task = split.dataset.task
    X = torch.from_numpy(split.X_train)
    y = torch.from_numpy(split.y_train if task == "classification" else
                         ((split.y_train - float(model.y_mean)) / float(model.y_std))
                         .astype(np.float32).reshape(-1, 1))
    loss_fn = torch.nn.CrossEntropyLoss() if task == "classification" else torch.nn.MSELoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(cfg.seed)
    best, best_state = -np.inf, None
    with Reporter(cfg.quiet).task("torch epochs", total=epochs) as advance:
        for _ in range(epochs):
            model.train()
            total = 0.0
            for idx in batches(len(X), 32, rng):
                opt.zero_grad()
                loss = loss_fn(model.logits(X[idx]), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            model.eval()
            score = metrics(task, split.y_val, predict(model, split.X_val, task))[
                primary_metric(task)]
            if score > best:  # keep the weights of the best validation epoch
                best = score
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            advance(status=epoch_status(total / len(X), score, task))
    model.load_state_dict(best_state)


def _save_program(model, path: Path, n_features: int) -> None:
    torch = require("torch")
    example = (torch.zeros(16, n_features),)  # see formats/torch_program.EXAMPLE_BATCH
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def predict(model, X: np.ndarray, task: str) -> dict[str, np.ndarray]:
    torch = require("torch")
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()
    return {output_name(task): out}


def load(folder: Path, card: dict[str, Any]):
    """Rebuild from the card's architecture and load the state dict (no pickle)."""
    torch = require("torch", purpose="to load a torch model")
    model = build(card["model"]["architecture"])
    model.load_state_dict(torch.load(folder / STATE_FILE, weights_only=True))
    return model.eval()


def load_program(folder: Path):
    """The saved ``torch.export`` program as a callable module."""
    torch = require("torch", purpose="to load a torch.export program")
    return torch.export.load(folder / PROGRAM_FILE).module()


