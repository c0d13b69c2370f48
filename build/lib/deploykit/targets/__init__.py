"""Device-side runtimes that live outside the Python package proper, shipped with it as
``deploykit.targets`` (pyproject maps this folder there): ``edge/`` and ``mobile/`` runners
copied into device packages, ``web/`` the Node runner and the browser page."""

from pathlib import Path


def folder() -> Path:
    """Where these files are: ``targets/`` of a checkout, or inside an installed wheel."""
    return Path(__file__).resolve().parent
