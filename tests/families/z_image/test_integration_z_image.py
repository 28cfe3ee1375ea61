"""Z-Image Fun ControlNets through the real nodes (CNR_ControlNetLoader from models/model_patches, CNR_HintVAE,
CNR_ApplyControlResiduals) on ComfyUI's own Z-Image MODEL: sampling changes with the control and its window,
zero weights change nothing, stacked controls share one forward, and the MODEL is left exactly as it was.

ComfyUI's Z-Image arrived after the 2024-03 CI host, so these run only on a current ComfyUI (``COMFYUI_PATH``).
"""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from tiny_z_image import WIDE, release_state_dict, tiny_controlnet

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Z-Image needs a current ComfyUI: set COMFYUI_PATH to run the Z-Image node tests")]

APPLY = "CNR_ApplyControlResiduals"
LATENT = torch.zeros(1, 16, 8, 12)
IMAGE = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(11))  # 8x the latent
RUN = {"steps": 3, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}
EXECUTED = "executed steps (diffusers)"
REFERENCE_RULE = "reference (binary mask, nearest, SD3 shift)"


@pytest.fixture(scope="module")
def files(nodes, transformer, tmp_path_factory):
    """2.1 and v1 files (places fit the 4-layer base) in a models/model_patches folder."""
    import folder_paths
    folder = tmp_path_factory.mktemp("model_patches")
    for version, name in (("2.1", "zimage-wide-2.1.safetensors"), ("1.0", "zimage-wide-1.0.safetensors")):
        weights = release_state_dict(version, tiny_controlnet(version, transformer))
        save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / name))
    nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"].INPUT_TYPES()
    folder_paths.add_model_folder_path("model_patches", str(folder))
    return folder


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return tiny_sd3_vae()


def _node(nodes, node_id, *args, **kwargs):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)[0]


def _control(nodes, vae, name="zimage-wide-2.1.safetensors"):
    # The tiny base has 4 main layers: the skips go after layers 0..3 (2.1) or 0 and 2 (1.0).
    control = _node(nodes, "CNR_HintVAE", _node(nodes, "CNR_ControlNetLoader", name), vae)
    places = (0, 1, 2, 3) if control.net.config.version != "1.0" else (0, 2)
    object.__setattr__(control.net, "config", type(control.net.config)(**{**control.net.config.__dict__,
                                                                          "places": places}))
    return control


def _ours(nodes, model, control, strength=0.8, start=0.0, end=1.0, timing=EXECUTED, **optional):
    return _node(nodes, APPLY, model, control, IMAGE, strength, start, end, "balanced", "crop", timing, **optional)


def _conditioning(seed):
    return [[torch.randn(1, 5, WIDE["cap_feat_dim"], generator=torch.Generator().manual_seed(seed)), {}]]


def _sample(model):
    return comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_model_info_reads_a_z_image_model(model):
    from cnr_pack.nodes.model_info import image_token_width, model_family
    assert (model_family(model), image_token_width(model)) == ("z_image", WIDE["dim"])


def test_the_control_changes_sampling_and_the_model_is_left_as_it_was(nodes, files, vae, model):
    dm = model.model.diffusion_model
    before = {k: v.clone() for k, v in dm.state_dict().items()}
    attributes, hooks = set(vars(dm)), len(dm._forward_hooks) + len(dm._forward_pre_hooks)
    plain = _sample(model)
    controlled = _ours(nodes, model, _control(nodes, vae))
    got = _sample(controlled)
    assert _rel(got, plain) > 1e-2, "the control must change the result"
    assert torch.equal(_sample(model), plain)
    assert set(vars(dm)) == attributes and len(dm._forward_hooks) + len(dm._forward_pre_hooks) == hooks
    assert all(torch.equal(v, before[k]) for k, v in dm.state_dict().items())
    assert "wrappers" not in model.model_options.get("transformer_options", {}) or not any(
        model.model_options["transformer_options"]["wrappers"].values())


def test_sampling_twice_with_the_controlled_model_gives_the_same_result(nodes, files, vae, model):
    controlled = _ours(nodes, model, _control(nodes, vae))
    assert torch.equal(_sample(controlled), _sample(controlled))


def test_zero_block_weights_sample_exactly_as_the_plain_model(nodes, files, vae, model):
    zero = _ours(nodes, model, _control(nodes, vae), block_weights="0, 0, 0, 0, 0, 0")
    assert torch.equal(_sample(zero), _sample(model))


def test_the_window_leaves_steps_out(nodes, files, vae, model):
    control = _control(nodes, vae)
    full = _sample(_ours(nodes, model, control))
    late = _sample(_ours(nodes, model, control, start=0.5))
    assert _rel(late, full) > 1e-3 and _rel(late, _sample(model)) > 1e-3


def test_uncond_multiplier_zero_keeps_the_control_off_the_negative_pass(nodes, files, vae, model):
    control = _control(nodes, vae)
    run = dict(RUN, cfg=3.0)
    both = comfy_host.sample(_ours(nodes, model, control), _conditioning(1), _conditioning(2), **run)
    positive_only = comfy_host.sample(_ours(nodes, model, control, uncond_multiplier=0.0), _conditioning(1),
                                      _conditioning(2), **run)
    plain = comfy_host.sample(model, _conditioning(1), _conditioning(2), **run)
    assert _rel(positive_only, both) > 1e-3 and _rel(positive_only, plain) > 1e-3


def test_a_mask_limits_where_the_control_acts(nodes, files, vae, model):
    control = _control(nodes, vae)
    left = torch.zeros(1, 64, 96)
    left[..., :48] = 1.0
    full, masked = _sample(_ours(nodes, model, control)), _sample(_ours(nodes, model, control, mask=left))
    assert _rel(masked, full) > 1e-3 and _rel(masked, _sample(model)) > 1e-3


def test_stacked_controls_share_one_forward_and_both_act(nodes, files, vae, model):
    from comfy.patcher_extension import WrappersMP

    from cnr_pack.nodes.bindings.z_image import WRAPPER_KEY
    first = _ours(nodes, model, _control(nodes, vae))
    both = _ours(nodes, first, _control(nodes, vae, "zimage-wide-1.0.safetensors"), strength=0.5)
    assert len(both.get_wrappers(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)) == 1
    assert _rel(_sample(both), _sample(first)) > 1e-3


def test_a_z_image_controlnet_on_an_sd15_model_is_refused_naming_both(nodes, files, vae):
    with pytest.raises(ValueError) as err:
        _ours(nodes, comfy_host.tiny_unet(), _control(nodes, vae))
    message = str(err.value)
    assert message.startswith(f"{APPLY}: controlnet: ") and "Z_IMAGE ControlNet" in message and "SD15" in message


def _tiny_flux_model():
    """ComfyUI's own Flux MODEL at a tiny width (unrandomised: it is refused before it runs)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
              "hidden_size": 32, "mlp_ratio": 2.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
              "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": False}
    return comfy.model_patcher.ModelPatcher(comfy.supported_models.Flux(config).get_model({}),
                                            load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def test_a_z_image_controlnet_on_a_flux_model_is_refused_naming_both(nodes, files, vae):
    with pytest.raises(ValueError) as err:
        _ours(nodes, _tiny_flux_model(), _control(nodes, vae))
    message = str(err.value)
    assert message.startswith(f"{APPLY}: controlnet: ") and "Z_IMAGE ControlNet" in message and "Flux" in message


def test_a_control_with_more_places_than_the_model_has_layers_is_refused(nodes, files, vae, model):
    control = _node(nodes, "CNR_HintVAE", _node(nodes, "CNR_ControlNetLoader", "zimage-wide-2.1.safetensors"), vae)
    with pytest.raises(ValueError, match=r"main layers up to 21 .* the model has 4"):
        _ours(nodes, model, control)


def test_two_control_images_for_one_latent_are_refused_naming_the_image(nodes, files, vae, model):
    controlled = _node(nodes, APPLY, model, _control(nodes, vae), torch.cat([IMAGE, IMAGE]), 0.8, 0.0, 1.0,
                       "balanced", "crop", EXECUTED)
    with pytest.raises(ValueError, match=f"{APPLY}: image"):
        _sample(controlled)


def test_an_inpaint_image_and_mask_from_cnr_inpaintcontrol_change_sampling(nodes, files, vae, model):
    control = _control(nodes, vae)
    mask = torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1.0
    inpainting = _node(nodes, "CNR_InpaintControl", control, mask, REFERENCE_RULE, inpaint_image=IMAGE)
    assert torch.equal(inpainting.inpaint_image, IMAGE.movedim(-1, 1)) and torch.equal(inpainting.inpaint_mask, mask)
    plain_control = _sample(_ours(nodes, model, control))
    assert _rel(_sample(_ours(nodes, model, inpainting)), plain_control) > 1e-3


def test_an_inpaint_image_without_its_mask_is_refused_naming_the_node(nodes, files, vae, model):
    from dataclasses import replace
    control = replace(_control(nodes, vae), inpaint_image=IMAGE.movedim(-1, 1))
    with pytest.raises(ValueError, match=f"{APPLY}: controlnet: .*inpaint image but no inpaint mask"):
        _ours(nodes, model, control)


def test_a_v1_controlnet_given_an_inpaint_mask_is_refused_naming_the_node(nodes, files, vae, model):
    from dataclasses import replace
    control = replace(_control(nodes, vae, "zimage-wide-1.0.safetensors"), inpaint_mask=torch.ones(1, 64, 96))
    with pytest.raises(ValueError, match=f"{APPLY}: controlnet: .*1.0 ControlNet, which takes no inpaint mask"):
        _ours(nodes, model, control)


def test_on_a_comfyui_with_z_image_patch_hooks_the_controls_go_in_as_patches_once(nodes, files, vae, model):
    # A patcher answering as newer ComfyUI's does (set_model_noise_refiner_patch): 0.3.75's model never calls
    # the patches, so only what the Apply node installs is checked here; the patches' arithmetic is the one
    # the composed forward runs (test_z_image_comfy_parity).
    from comfy.patcher_extension import WrappersMP

    from cnr_pack.nodes.bindings.z_image import WRAPPER_KEY
    class NewerPatcher(type(model)):
        def set_model_noise_refiner_patch(self, patch):
            self.set_model_patch(patch, "noise_refiner")

    newer = NewerPatcher(model.model, model.load_device, model.offload_device)
    stacked = _ours(nodes, _ours(nodes, newer, _control(nodes, vae)), _control(nodes, vae), strength=0.5)
    patches = stacked.model_options["transformer_options"]["patches"]
    assert len(patches["noise_refiner"]) == 1 and len(patches["double_block"]) == 1
    assert not stacked.get_wrappers(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    assert "patches" not in model.model_options["transformer_options"]


def test_cnr_inpaintcontrol_refuses_a_v1_controlnet_which_has_no_inpaint_channels(nodes, files, vae):
    control = _control(nodes, vae, "zimage-wide-1.0.safetensors")
    with pytest.raises(ValueError, match="CNR_InpaintControl: controlnet: .*no mask channel"):
        _node(nodes, "CNR_InpaintControl", control, torch.ones(1, 64, 96), REFERENCE_RULE)


def _tiny_qwen_image_model():
    """ComfyUI's own Qwen-Image MODEL at a tiny width (unrandomised: it is refused before it runs)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    from tiny_qwen import TINY
    config = comfy.supported_models.QwenImage({**TINY, "image_model": "qwen_image", "num_layers": 1})
    return comfy.model_patcher.ModelPatcher(config.get_model({}), load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def test_a_z_image_controlnet_on_a_qwen_image_model_is_refused_naming_both(nodes, files, vae):
    with pytest.raises(ValueError) as err:
        _ours(nodes, _tiny_qwen_image_model(), _control(nodes, vae))
    message = str(err.value)
    assert message.startswith(f"{APPLY}: controlnet: ") and "Z_IMAGE ControlNet" in message and "Qwen" in message


def test_a_control_image_of_another_size_is_fitted_to_the_latent_as_the_same_image_resized(nodes, files, vae, model):
    import torch.nn.functional as F
    control = _control(nodes, vae)
    large = F.interpolate(IMAGE.movedim(-1, 1), scale_factor=2, mode="nearest").movedim(1, -1)
    fitted = _node(nodes, APPLY, model, control, large, 0.8, 0.0, 1.0, "balanced", "crop", EXECUTED)
    assert _rel(_sample(fitted), _sample(_ours(nodes, model, control))) < 1e-2
    assert _rel(_sample(fitted), _sample(model)) > 1e-3, "the fitted control must still act"
