"""The examples in the core's docstrings are run and must print what they show."""
import doctest
import importlib
import pkgutil

import pytest
import torch

import cnr_pack.controlnet_core as core

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(core.__path__, prefix=f"{core.__name__}."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_of_the_core_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_the_core_has_docstring_examples_to_run():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in MODULES
                   for t in finder.find(importlib.import_module(name)))
    assert examples >= 10
