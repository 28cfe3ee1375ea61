"""Island labelling and hole filling against scipy.ndimage (the library Inpaint-CropAndStitch fills holes with)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from cnr_pack.controlnet_core.refine.islands import CAS_HOLE_THRESHOLDS, fill_holes, islands_with_bboxes, label_islands


def _random_masks(count, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        yield torch.from_numpy((rng.random((h, w)) > rng.uniform(0.3, 0.8)).astype(np.float32)), rng


@pytest.mark.parametrize("connectivity", [4, 8])
def test_islands_partition_the_mask_as_scipy_label_does(connectivity):
    structure = np.ones((3, 3)) if connectivity == 8 else None
    for mask, _ in _random_masks(60):
        labels, n = label_islands(mask, connectivity)
        expected, count = ndimage.label(mask.numpy() > 0, structure=structure)
        assert n == count
        got = labels.numpy()
        assert np.array_equal(got > 0, expected > 0)
        assert len(set(zip(got[got > 0].tolist(), expected[got > 0].tolist()))) == n


def test_island_boxes_are_the_bounding_boxes_scipy_finds():
    for mask, _ in _random_masks(30, seed=1):
        labels, n, boxes = islands_with_bboxes(mask)
        for i, (ys, xs) in enumerate(ndimage.find_objects(labels.numpy())):
            assert boxes[i].tolist() == [xs.start, ys.start, xs.stop, ys.stop]


def _cas_fill_holes(mask):
    """Inpaint-CropAndStitch's documented hole filling, written with scipy: per threshold, closing
    (3x3, border 1), fill holes, raise the filled pixels to the threshold."""
    out = mask.copy()
    for threshold in CAS_HOLE_THRESHOLDS:
        closed = ndimage.binary_closing(out >= threshold, structure=np.ones((3, 3)), border_value=1)
        out = np.maximum(out, np.where(ndimage.binary_fill_holes(closed), threshold, 0))
    return out.astype(np.float32)


def test_hole_filling_equals_cas_algorithm_on_random_soft_masks():
    for mask, rng in _random_masks(50, seed=2):
        soft = mask * torch.from_numpy(rng.random(mask.shape).astype(np.float32))
        assert np.array_equal(fill_holes(soft).numpy(), _cas_fill_holes(soft.numpy()))


def test_a_ring_mask_becomes_a_disc():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    r = ((yy - 23.5) ** 2 + (xx - 23.5) ** 2).sqrt()
    ring = ((r > 10) & (r < 16)).float()
    filled = fill_holes(ring)
    assert torch.equal(filled, (r < 16).float())
    assert torch.equal(filled, torch.from_numpy(_cas_fill_holes(ring.numpy())))


def test_hole_filling_never_lowers_a_mask_value():
    for mask, rng in _random_masks(15, seed=3):
        soft = mask * torch.from_numpy(rng.random(mask.shape).astype(np.float32))
        assert bool((fill_holes(soft) >= soft).all())
