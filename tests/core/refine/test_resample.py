"""Float resampling equals PIL's float-mode resize for the shared filters; area equals torch's average."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnr_pack.controlnet_core.refine.resample import resize

PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
               "nearest": Image.NEAREST}


@pytest.mark.parametrize("name", list(PIL_FILTERS))
@pytest.mark.parametrize("size", [(20, 31), (80, 101), (11, 7)])
def test_filters_match_pil_float_resize_when_shrinking_and_enlarging(name, size):
    pixels = np.random.default_rng(0).random((37, 53)).astype(np.float32) * 255
    ours = resize(torch.from_numpy(pixels)[None, None], size, name)[0, 0].numpy()
    theirs = np.asarray(Image.fromarray(pixels, mode="F").resize(size[::-1], PIL_FILTERS[name]))
    assert np.abs(ours - theirs).max() < 1e-3


def test_area_shrink_equals_torch_area_for_whole_factors():
    image = torch.rand(1, 3, 40, 60)
    assert torch.allclose(resize(image, (10, 20), "area"), F.interpolate(image, (10, 20), mode="area"), atol=1e-6)


def test_same_size_is_a_copy_with_equal_values():
    image = torch.rand(1, 3, 9, 9)
    out = resize(image, (9, 9), "lanczos")
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()
