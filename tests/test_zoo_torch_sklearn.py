"""The model zoo (tests/zoo.py), torch and sklearn part: each model through the CLI to every
reachable target (see zoo_check.py for what is asserted). Split in two files so both test
processes share the work."""

from __future__ import annotations

import pytest
import zoo
import zoo_check

pytestmark = pytest.mark.slow  # exports deep models to every target

MODELS = [n for n, (group, _) in zoo.ZOO.items() if group in ("torch", "sklearn")]
RESULTS: dict = {}


@pytest.mark.parametrize("name", MODELS)
def test_zoo_model(name, tmp_path_factory):
    zoo_check.check_model(name, tmp_path_factory.mktemp("zoo"), RESULTS)


def test_zoo_table():
    """Prints the matrix (pytest -s shows it); runs after the models of this file."""
    assert set(RESULTS) == set(MODELS), "run the whole file"
    print("\n" + zoo_check.table(RESULTS))
    assert zoo_check.pass_rate(RESULTS) >= 0.9, zoo_check.table(RESULTS)
