"""Every node is registered once, prefixed, documented, and loads through ComfyUI's own loader."""
import pytest

import comfy_host

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def pack_nodes():
    nodes = comfy_host.boot()
    return {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("CNR_")}


def test_all_thirteen_nodes_are_registered_with_the_prefix(pack_nodes):
    assert set(pack_nodes) == {"CNR_ControlNetLoader", "CNR_ApplyControlResiduals", "CNR_UnionType", "CNR_HintVAE",
                               "CNR_FluxUnionMode", "CNR_InpaintControl", "CNR_QwenFunStrength",
                               "CNR_Img2ImgStrength", "CNR_InpaintMaskPrep", "CNR_PaddedCrop", "CNR_PaddedPaste",
                               "CNR_ApplyCrop", "CNR_StrengthKeyframe"}


def test_display_names_relabel_no_core_node(pack_nodes):
    nodes = comfy_host.boot()
    ours = {k for k, v in nodes.NODE_DISPLAY_NAME_MAPPINGS.items() if v.endswith("(CNR)")}
    assert ours == set(pack_nodes)


@pytest.mark.parametrize("node_id", ["CNR_ControlNetLoader", "CNR_ApplyControlResiduals", "CNR_UnionType",
                                     "CNR_HintVAE", "CNR_FluxUnionMode", "CNR_InpaintControl", "CNR_QwenFunStrength",
                                     "CNR_Img2ImgStrength", "CNR_InpaintMaskPrep", "CNR_PaddedCrop", "CNR_PaddedPaste",
                                     "CNR_ApplyCrop", "CNR_StrengthKeyframe"])
def test_node_has_description_category_and_a_tooltip_on_every_input_and_output(pack_nodes, node_id):
    cls = pack_nodes[node_id]
    assert cls.DESCRIPTION and cls.CATEGORY.startswith("ControlNet Refine/")
    assert cls.CATEGORY == cls.CATEGORY.split("/")[0] + "/" + cls.CATEGORY.split("/")[1].lower()
    for section in cls.INPUT_TYPES().values():
        for name, spec in section.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
