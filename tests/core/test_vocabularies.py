"""Option names: each node label map covers exactly its core vocabulary, and choices come from it."""
import pytest

import comfy_host
from cnr_pack.controlnet_core.refine.canvas import EXTEND_UNITS, PRERESIZE_MODES
from cnr_pack.controlnet_core.refine.crop import PASTE_MODES
from cnr_pack.controlnet_core.injection.hint import RESIZE_MODES
from cnr_pack.controlnet_core.injection.weighting import CONTROL_MODES
from cnr_pack.controlnet_core.refine.harmony import HARMONY_MODES
from cnr_pack.controlnet_core.refine.regions import REGION_MODES
from cnr_pack.controlnet_core.refine.masks import FILLS, LATENT_DOWNSCALES
from cnr_pack.controlnet_core.refine.resample import RESAMPLE_FILTERS
from cnr_pack.controlnet_core.refine.schedule import STRENGTH_RULES
from cnr_pack.controlnet_core.injection.window import WINDOW_TIMINGS

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def node_modules():
    comfy_host.boot()
    import cnr_pack.nodes.controlnet_nodes as controlnet_nodes
    import cnr_pack.nodes.sampling_nodes as refine_nodes
    return controlnet_nodes, refine_nodes


def test_control_mode_labels_cover_every_control_mode_once(node_modules):
    labels = node_modules[0].CONTROL_MODE_LABELS
    assert sorted(labels.values()) == sorted(CONTROL_MODES)


def test_window_timing_labels_cover_every_timing_once(node_modules):
    labels = node_modules[0].TIMING_LABELS
    assert sorted(labels.values()) == sorted(WINDOW_TIMINGS)


def test_strength_rule_labels_cover_every_rule_once(node_modules):
    labels = node_modules[1].STRENGTH_RULE_LABELS
    assert sorted(labels.values()) == sorted(STRENGTH_RULES)


@pytest.mark.parametrize("node_id,input_name,vocabulary", [
    ("CNR_ApplyControlResiduals", "resize_mode", RESIZE_MODES),
    ("CNR_InpaintMaskPrep", "fill", FILLS),
    ("CNR_InpaintMaskPrep", "latent_downscale", LATENT_DOWNSCALES),
    ("CNR_PaddedCrop", "filter", RESAMPLE_FILTERS),
    ("CNR_PaddedCrop", "paste_mode", PASTE_MODES),
    ("CNR_PaddedCrop", "regions", REGION_MODES),
    ("CNR_PaddedCrop", "preresize", PRERESIZE_MODES),
    ("CNR_PaddedCrop", "extend_unit", EXTEND_UNITS),
    ("CNR_PaddedCrop", "downscale_filter", ("same as filter",) + RESAMPLE_FILTERS),
    ("CNR_PaddedPaste", "harmony", HARMONY_MODES),
])
def test_choice_inputs_offer_exactly_the_core_vocabulary(node_modules, node_id, input_name, vocabulary):
    spec = comfy_host.boot().NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    choices = {**spec["required"], **spec.get("optional", {})}[input_name][0]
    assert tuple(choices) == tuple(vocabulary)
