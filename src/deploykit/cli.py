"""``deploykit`` command line. Imports nothing heavy until a command runs.

Every :class:`~deploykit.errors.DeploykitError` is printed as ``error: ...`` and exits
with status 2; a traceback means a bug in deploykit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deploykit import __version__
from deploykit.errors import DeploykitError

PATHS = ("sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch", "auto")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deploykit",
        description="Train along any path of the Python AI flowchart, export to every "
                    "deployment artifact, and prove each one predicts like the original.")
    p.add_argument("--version", action="version", version=f"deploykit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model along one path and write a model folder")
    t.add_argument("--path", required=True, choices=PATHS, help="flowchart path")
    _data_args(t)
    t.add_argument("--out", required=True, help="model folder to write")
    t.add_argument("--epochs", type=int, help="deep paths: epochs (default per path)")
    t.add_argument("--arch", default="auto", choices=("auto", "mlp", "cnn"),
                   help="deep paths: CNN for image data by default, else MLP")
    t.add_argument("--target-score", type=float,
                   help="auto: validation score at which classical ML is enough")
    t.add_argument("--margin", type=float, default=0.01,
                   help="auto: how much a deep model must beat classical by (default 0.01)")
    t.add_argument("--deep-path", default="keras-tensorflow",
                   choices=PATHS[1:5], help="auto: the deep path to try")
    t.add_argument("--json", action="store_true", help="print the model card as JSON")
    t.set_defaults(func=_cmd_train)

    w = sub.add_parser("what-if", help="train along every path and compare (the main job)")
    _data_args(w)
    w.add_argument("--out", default="whatif-out", help="folder for models and reports")
    w.add_argument("--epochs", type=int, help="deep paths: epochs (default per path)")
    w.set_defaults(func=_cmd_whatif)

    d = sub.add_parser("datasets", help="list the builtin datasets")
    d.set_defaults(func=_cmd_datasets)
    return p


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="builtin dataset (digits, iris, wine, breast_cancer, diabetes) "
                        "or a .csv / .npz file (default: digits)")
    p.add_argument("--target", help="CSV: the target column")
    p.add_argument("--task", choices=("classification", "regression"),
                   help="CSV/NPZ: the task, when it should not be inferred")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _cmd_train(a: argparse.Namespace) -> int:
    import json

    from deploykit.training import train

    auto = {"target_score": a.target_score, "margin": a.margin, "deep_path": a.deep_path} \
        if a.path == "auto" else {}
    r = train(a.path, a.data, a.out, target=a.target, task=a.task, seed=a.seed,
              epochs=a.epochs, arch=a.arch, quiet=a.quiet, **auto)
    if a.json:
        print(json.dumps(r.card, indent=2))
        return 0
    if r.decision:
        print(f"auto chose {r.decision['chosen']}: {r.decision['reason']}.")
        print(f"  rule: {r.decision['rule']}")
    test = ", ".join(f"{k} {v:.4f}" for k, v in r.metrics["test"].items())
    sel = r.card.get("selection") or {}
    cv = f" (cv {sel['metric']} {sel['cv_score']:.4f})" if "cv_score" in sel else ""
    print(f"{r.card['path']}: {r.card['model']['kind']}{cv}; test {test}; "
          f"trained in {r.card['train_seconds']:.1f} s -> {r.folder}")
    return 0


def _cmd_whatif(a: argparse.Namespace) -> int:
    from deploykit.whatif import table_rows, what_if

    result = what_if(a.data, a.out, seed=a.seed, epochs=a.epochs, quiet=a.quiet,
                     target=a.target)
    _print_table(f"What-if on {a.data}", *table_rows(result))
    print(f"report: {a.out}/report.md, {a.out}/report.json")
    return 0 if all(r["ok"] for r in result["rows"]) else 1


def _cmd_datasets(a: argparse.Namespace) -> int:
    from deploykit.data import describe_builtins

    for name, task in describe_builtins():
        print(f"{name:15s} {task}")
    return 0


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    Console(width=max(120, len(" ".join(header)) + 20)).print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except DeploykitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
