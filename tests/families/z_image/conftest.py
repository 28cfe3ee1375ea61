"""Fixtures the Z-Image tests that run in ComfyUI share: the tiny wide transformer and ComfyUI's Z-Image MODEL
built from it (``nodes`` comes from tests/conftest.py)."""
import pytest

from tiny_z_image import WIDE, comfy_z_image, tiny_transformer


@pytest.fixture(scope="module")
def transformer():
    return tiny_transformer(sizes=WIDE)


@pytest.fixture(scope="module")
def model(nodes, transformer):
    return comfy_z_image(transformer)
