"""ControlNet Union through the pack's nodes: CNR_UnionType, several types in one pass, refusals."""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host

GEN = torch.Generator().manual_seed(7)
CANNY, DEPTH = torch.rand(1, 64, 64, 3, generator=GEN), torch.rand(1, 64, 64, 3, generator=GEN)


def _conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 7, 32, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen)}]]


POS, NEG = _conditioning(1), _conditioning(2)


def _union_file(num_types, seed=3):
    """Random weights of a Union shaped like the tiny SDXL UNet (64 channels, y width 2816)."""
    from cnr_pack.controlnet_core.families.union.model import UnionConfig, UnionControlNet
    cfg = comfy_host.TINY_SDXL_CONFIG
    config = UnionConfig(model_channels=cfg["model_channels"], channel_mult=tuple(cfg["channel_mult"]),
                         num_res_blocks=(2, 2, 2), transformer_depth=tuple(cfg["transformer_depth"]),
                         transformer_depth_middle=cfg["transformer_depth_middle"], context_dim=cfg["context_dim"],
                         num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                         adm_in_channels=cfg["adm_in_channels"], num_control_types=num_types)
    with torch.device("meta"):
        keys = UnionControlNet(config).state_dict()
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in keys.items()}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    nodes = comfy_host.boot()
    import folder_paths
    folder = tmp_path_factory.mktemp("union")
    folder_paths.add_model_folder_path("controlnet", str(folder))
    save_file(_union_file(8), str(folder / "tiny-union-promax.safetensors"))
    save_file(_union_file(6), str(folder / "tiny-union.safetensors"))
    save_file(comfy_host.tiny_controlnet_state_dict(), str(folder / "tiny-classic.safetensors"))
    load = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load
    return (nodes, comfy_host.tiny_unet(sdxl=True), load("tiny-union-promax.safetensors")[0],
            load("tiny-union.safetensors")[0], load("tiny-classic.safetensors")[0])


def _sample(nodes, model, controlnet, image=CANNY):
    patched = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]().apply(
        model, controlnet, image, 1.0, 0.0, 1.0, "balanced", "crop", "model sigma (ComfyUI)")[0]
    return comfy_host.sample(patched, POS, NEG, steps=3)


def _choose(nodes, controlnet, *args, **kwargs):
    return nodes.NODE_CLASS_MAPPINGS["CNR_UnionType"]().choose(controlnet, *args, **kwargs)[0]


def test_union_type_node_lists_every_type_in_the_model_order(host):
    nodes = host[0]
    inputs = nodes.NODE_CLASS_MAPPINGS["CNR_UnionType"].INPUT_TYPES()
    assert inputs["required"]["type"][0] == ["openpose", "depth", "hed/pidi/scribble/ted",
                                             "canny/lineart/anime_lineart/mlsd", "normal", "segment", "tile",
                                             "repaint"]
    assert inputs["optional"]["type_2"][0][0] == "none"


def test_union_type_node_leaves_its_input_unchanged(host):
    nodes, _, promax = host[:3]
    chosen = _choose(nodes, promax, "depth", type_2="canny/lineart/anime_lineart/mlsd", image_2=CANNY)
    assert chosen.control_type == (1, 3) and len(chosen.extra_hints) == 1
    assert promax.control_type == () and promax.extra_hints == ()
    assert chosen.net is promax.net and chosen.patcher is promax.patcher


def test_two_union_types_in_one_pass_do_not_depend_on_the_pair_order(host):
    nodes, model, promax = host[:3]
    canny_depth = _choose(nodes, promax, "canny/lineart/anime_lineart/mlsd", type_2="depth", image_2=DEPTH)
    depth_canny = _choose(nodes, promax, "depth", type_2="canny/lineart/anime_lineart/mlsd", image_2=CANNY)
    a = _sample(nodes, model, canny_depth, CANNY)
    b = _sample(nodes, model, depth_canny, DEPTH)
    canny_only = _sample(nodes, model, _choose(nodes, promax, "canny/lineart/anime_lineart/mlsd"), CANNY)
    assert (a - canny_only).abs().max() > 1e-2, "the second type must change the result"
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)


def test_apply_refuses_a_union_whose_types_were_not_chosen(host):
    nodes, model, promax = host[:3]
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: controlnet: 'tiny-union-promax.safetensors' is "
                                         "a ControlNet Union: choose its control type"):
        _sample(nodes, model, promax)


def test_union_type_node_refuses_promax_types_on_a_six_type_file(host):
    nodes, six = host[0], host[3]
    with pytest.raises(ValueError, match=r"CNR_UnionType: type_2: 'tile' is not in 'tiny-union.safetensors', a "
                                         r"6-type ControlNet Union with openpose, .*segment; .*load the ProMax file"):
        _choose(nodes, six, "depth", type_2="tile", image_2=CANNY)


def test_union_type_node_refuses_a_classic_controlnet(host):
    nodes, classic = host[0], host[4]
    with pytest.raises(ValueError, match="CNR_UnionType: controlnet: 'tiny-classic.safetensors' is a CUSTOM "
                                         "ControlNet, not a ControlNet Union"):
        _choose(nodes, classic, "depth")


@pytest.mark.parametrize("kwargs, missing", [({"type_2": "depth"}, "image_2"), ({"image_3": CANNY}, "type_3")])
def test_union_type_node_refuses_a_type_without_its_image_and_back(host, kwargs, missing):
    nodes, _, promax = host[:3]
    with pytest.raises(ValueError, match=f"CNR_UnionType: {missing}: type_\\d and image_\\d go together"):
        _choose(nodes, promax, "openpose", **kwargs)


@pytest.mark.skipif(not comfy_host.is_current_host(),
                    reason="ComfyUI's own Union (2024-07) is newer than the CI host; set COMFYUI_PATH to compare")
def test_union_single_type_matches_comfyui_core_union(host, tmp_path):
    """ComfyUI hard-codes the fusion at 320 channels, so this UNet and its Union are 320 wide (and shallow)."""
    nodes = host[0]
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import folder_paths
    from comfy_extras.nodes_controlnet import SetUnionControlNetType
    cfg = dict(comfy_host.TINY_SDXL_CONFIG, model_channels=320, channel_mult=[1, 1], num_res_blocks=1,
               transformer_depth=[0, 1], transformer_depth_middle=1, transformer_depth_output=[0, 0, 1, 1])
    unet = comfy.supported_models.SDXL(dict(cfg)).get_model({})
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in unet.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model = comfy.model_patcher.ModelPatcher(unet, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
    cn_cfg = {k: v for k, v in cfg.items() if k not in ("out_channels", "transformer_depth_output")}
    native_net = comfy.cldm.cldm.ControlNet(hint_channels=3, union_controlnet_num_control_type=8,
                                            dtype=torch.float32, device="cpu", **cn_cfg)
    weights = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in native_net.state_dict().items()}
    native_net.load_state_dict(weights)
    native = comfy.controlnet.ControlNet(native_net, load_device=mm.get_torch_device(), manual_cast_dtype=None)
    native = SetUnionControlNetType().set_controlnet_type(native, "depth")[0]
    # The file names the packed attention projection as nn.MultiheadAttention does; ComfyUI renames it on load.
    file = {k.replace(".attn.in_proj.", ".attn.in_proj_"): v for k, v in weights.items()}
    save_file(file, str(tmp_path / "union-320.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(tmp_path))
    ours = _choose(nodes, nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load("union-320.safetensors")[0],
                   "depth")
    npos, nneg = nodes.ControlNetApplyAdvanced().apply_controlnet(POS, NEG, native, DEPTH, 1.0, 0.0, 1.0)[:2]
    expected = comfy_host.sample(model, npos, nneg, steps=3)
    got = _sample(nodes, model, ours, DEPTH)
    plain = comfy_host.sample(model, POS, NEG, steps=3)
    assert (expected - plain).abs().max() > 1e-2
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
