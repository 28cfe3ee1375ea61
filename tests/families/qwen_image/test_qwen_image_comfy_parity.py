"""Qwen-Image InstantX ControlNets against ComfyUI's own ``QwenImageControlNetModel`` and Qwen-Image model on
identical tiny weights: residuals block by block, the Apply node's binding, and whole sampling runs through
the real nodes (CNR_ControlNetLoader, CNR_HintVAE, CNR_ApplyControlResiduals) against ControlNetApplyAdvanced.

ComfyUI's Qwen-Image arrived after the 2024-03 CI host, so these run only on a current ComfyUI
(``COMFYUI_PATH``). ComfyUI's Qwen-Image detection hard-codes the full width, so the tiny models are built
directly from its classes; its ControlNet is wrapped as ``load_controlnet_qwen_instantx`` wraps it.
"""
import pytest
import torch

import comfy_host
from comfy_sampling import OneFrameVAE, forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from cnr_pack.controlnet_core.families.qwen_image.model import expand_to_base
from cnr_pack.controlnet_core.loading.registry import load_controlnet
from tiny_qwen import AXES_DIM, randomize_qwen

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the Qwen-Image parity tests")]

CHANNELS = 16  # the Wan-2.1 latent format of a Qwen-Image MODEL normalises 16 channels
TEXT = 16
PARAMS = {"patch_size": 2, "in_channels": 4 * CHANNELS, "out_channels": CHANNELS, "attention_head_dim": 16,
          "num_attention_heads": 3, "joint_attention_dim": TEXT, "axes_dims_rope": AXES_DIM}
COMFY_BASE_BLOCKS = 60  # what ComfyUI's Qwen-Image ControlNet always spreads to
LATENT = torch.zeros(1, CHANNELS, 1, 8, 12)
# At 8x the latent, so neither side resamples the control image.
IMAGE = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(11))
RUN = {"steps": 4, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}
MODEL_SIGMA = "model sigma (ComfyUI)"
TOL, REL_TOL = 1e-5, 1e-4


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


def _comfy_controlnet(seed=0, num_layers=2, extra_condition_channels=0):
    import comfy.ldm.qwen_image.controlnet
    import comfy.ops
    net = comfy.ldm.qwen_image.controlnet.QwenImageControlNetModel(
        extra_condition_channels=extra_condition_channels, operations=comfy.ops.disable_weight_init,
        dtype=torch.float32, device="cpu", num_layers=num_layers, **PARAMS)
    return randomize_qwen(net, seed)


def _tiny_qwen_model(nodes, num_layers=COMFY_BASE_BLOCKS, seed=5):
    """ComfyUI's own Qwen-Image MODEL (model_base.QwenImage in a ModelPatcher) at a tiny width."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    model = comfy.supported_models.QwenImage({**PARAMS, "image_model": "qwen_image", "num_layers": num_layers})
    model = model.get_model({})
    randomize_qwen(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return OneFrameVAE(tiny_sd3_vae())


def _inputs(height=8, width=12, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, CHANNELS, 1, height, width, generator=gen), "timesteps": torch.tensor([0.3, 0.8]),
            "context": torch.randn(2, 5, TEXT, generator=gen),
            "hint": torch.randn(1, CHANNELS, 1, height, width, generator=gen)}


def _max_diff(theirs, ours) -> float:
    assert len(theirs) == len(ours)
    return max((a - b).abs().max().item() for a, b in zip(theirs, ours))


def test_residuals_equal_comfyuis_qwen_image_controlnet_on_every_base_block(nodes):
    native = _comfy_controlnet()
    ours = load_controlnet(native.state_dict(), axes_dim=AXES_DIM)
    inputs = _inputs()
    with torch.no_grad():
        theirs = native(**inputs)["input"]
        own = ours(inputs["x"], inputs["timesteps"], inputs["context"], inputs["hint"])
    expanded = expand_to_base(own, COMFY_BASE_BLOCKS).input
    assert min(t.abs().max().item() for t in own.tensors) > 0.1, "random weights must give non-zero residuals"
    assert _max_diff(theirs, expanded) <= TOL


def test_comfyuis_odd_grid_centring_is_the_comfyui_option_and_differs_from_the_reference(nodes):
    native = _comfy_controlnet()
    reference = load_controlnet(native.state_dict(), axes_dim=AXES_DIM)
    comfy_centred = load_controlnet(native.state_dict(), axes_dim=AXES_DIM)
    object.__setattr__(comfy_centred, "config", type(reference.config)(**{**reference.config.__dict__,
                                                                           "centre": "comfyui"}))
    inputs = _inputs(height=6, width=10)  # 3 x 5 tokens
    args = (inputs["x"], inputs["timesteps"], inputs["context"], inputs["hint"])
    with torch.no_grad():
        theirs = native(**inputs)["input"]
        as_comfy = expand_to_base(comfy_centred(*args), COMFY_BASE_BLOCKS).input
        as_reference = expand_to_base(reference(*args), COMFY_BASE_BLOCKS).input
    assert _max_diff(theirs, as_comfy) <= TOL
    assert _max_diff(theirs, as_reference) > 1e-3


@pytest.fixture(scope="module")
def natives(nodes, tmp_path_factory):
    """ComfyUI's own tiny Qwen-Image ControlNets, also written to a controlnet folder for our loader."""
    nets = {"qwen_union.safetensors": _comfy_controlnet(),
            "qwen_inpainting.safetensors": _comfy_controlnet(seed=4, extra_condition_channels=4)}
    write_controlnet_folder(tmp_path_factory, "qwen_controlnet", {name: net.state_dict() for name, net in nets.items()})
    return nets


def _ours(nodes, model, name, vae, strength=0.8, start=0.0, end=1.0, **optional):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", name), vae)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, strength, start, end, "balanced",
                       "crop", MODEL_SIGMA, **optional)


def _conditioning(seed):
    return [[torch.randn(1, 5, TEXT, generator=torch.Generator().manual_seed(seed)), {}]]


def _comfyui(nodes, native_net, vae, strength=0.8, start=0.0, end=1.0, conditioning=None):
    """Conditioning with ComfyUI's own ControlNet, wrapped as load_controlnet_qwen_instantx wraps it."""
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.model_management as mm
    native = comfy.controlnet.ControlNet(native_net, compression_ratio=1, latent_format=comfy.latent_formats.Wan21(),
                                         load_device=mm.get_torch_device(), manual_cast_dtype=None, extra_conds=[])
    pos, neg = conditioning or (_conditioning(1), _conditioning(2))
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, IMAGE, strength, start, end, vae=vae)[:2]


def test_model_info_reads_a_qwen_image_model(nodes):
    from cnr_pack.nodes.model_info import image_token_width, model_family, text_width
    model = _tiny_qwen_model(nodes, num_layers=3)
    assert (model_family(model), image_token_width(model), text_width(model)) == ("qwen_image", 48, TEXT)


def test_the_binding_spreads_residuals_over_the_models_own_block_count(nodes, natives, vae):
    from cnr_pack.nodes.bindings.registry import bind
    loaded = node_output(nodes, "CNR_ControlNetLoader", "qwen_union.safetensors")
    control = node_output(nodes, "CNR_HintVAE", loaded, vae)
    binding = bind(_tiny_qwen_model(nodes, num_layers=7), control, "CNR_ApplyControlResiduals")
    own = control.net(*(t[:, :, 0] if t.ndim == 5 else t for t in _inputs().values()))
    assert (binding.patch, binding.input_popped, binding.control.net.config.axes_dim) == (2, False, AXES_DIM)
    assert [id(t) for t in binding.expand(own).input] == [id(t) for t in own.input for _ in range(4)][:7]


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_qwen_model(nodes)


def _plain(model):
    return comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)


def test_sampling_through_the_apply_node_equals_comfyuis_qwen_image_controlnet(nodes, natives, vae, model):
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["qwen_union.safetensors"], vae), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "qwen_union.safetensors", vae), _conditioning(1), _conditioning(2),
                            **RUN)
    assert rel_diff(_plain(model), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL


def test_model_sigma_window_samples_as_comfyuis_percent_range(nodes, natives, vae, model):
    native = natives["qwen_union.safetensors"]
    full = comfy_host.sample(model, *_comfyui(nodes, native, vae), **RUN)
    forget_dropped_models()
    expected = comfy_host.sample(model, *_comfyui(nodes, native, vae, start=0.2, end=0.6), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "qwen_union.safetensors", vae, start=0.2, end=0.6),
                            _conditioning(1), _conditioning(2), **RUN)
    assert rel_diff(full, expected) > 1e-3, "the window must leave steps out"
    assert rel_diff(got, expected) <= REL_TOL


def test_stacked_on_comfyuis_own_qwen_image_controlnet_samples_as_two_comfyui_controlnets(nodes, natives, vae,
                                                                                           model):
    theirs = _comfyui(nodes, _comfy_controlnet(seed=8), vae, strength=0.5)
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["qwen_union.safetensors"], vae,
                                                  conditioning=theirs), **RUN)
    forget_dropped_models()
    got = comfy_host.sample(_ours(nodes, model, "qwen_union.safetensors", vae), *theirs, **RUN)
    forget_dropped_models()
    assert rel_diff(comfy_host.sample(model, *theirs, **RUN), expected) > 1e-3, "both controls must act"
    assert rel_diff(got, expected) <= REL_TOL


def test_zero_block_weights_leave_sampling_unchanged(nodes, natives, vae, model):
    got = comfy_host.sample(_ours(nodes, model, "qwen_union.safetensors", vae, block_weights="0, 0"),
                            _conditioning(1), _conditioning(2), **RUN)
    assert torch.equal(got, _plain(model))


def test_a_qwen_image_controlnet_on_an_sd15_model_is_refused_naming_both(nodes, natives, vae):
    with pytest.raises(ValueError) as err:
        _ours(nodes, comfy_host.tiny_unet(), "qwen_union.safetensors", vae)
    message = str(err.value)
    assert message.startswith("CNR_ApplyControlResiduals: controlnet: ")
    assert "QWEN_IMAGE ControlNet" in message and "SD15" in message


def test_the_inpainting_controlnet_is_refused_at_apply_until_it_is_given_a_mask(nodes, natives, vae):
    with pytest.raises(ValueError, match=r"CNR_ApplyControlResiduals: controlnet: 'qwen_inpainting.safetensors' is an "
                                         r"inpainting ControlNet \(latent \+ mask hint\)"):
        _ours(nodes, _tiny_qwen_model(nodes, num_layers=3), "qwen_inpainting.safetensors", vae)
