"""The model zoo (tests/zoo.py), keras and tf part: each model through the CLI to every
reachable target (see zoo_check.py for what is asserted). Split in two files so both test
processes share the work."""

from __future__ import annotations

import pytest
import zoo_check

pytestmark = pytest.mark.slow  # exports deep models to every target

test_zoo_model, test_zoo_table = zoo_check.tests_for(("keras-tensorflow", "keras-torch", "tensorflow"))
