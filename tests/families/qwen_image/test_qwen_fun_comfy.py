"""The Qwen-Image Fun ControlNet through the real nodes on ComfyUI's own tiny Qwen-Image MODEL.

The ComfyUI host (0.3.75) has Qwen-Image but not the Fun ControlNet (ComfyUI >= 0.12), so the expected result
is ComfyUI's Qwen-Image model sampled with skips computed *in this test* by the reference's equations on
ComfyUI's own Qwen-Image blocks and the MODEL's embedders, passed through the model's ``control`` dict:
the pack's blocks, binder and wrapper take no part in it.
"""
import pytest
import torch
import torch.nn.functional as F

import comfy_host
from comfy_sampling import OneFrameVAE, forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from test_qwen_image_comfy_parity import CHANNELS, IMAGE, MODEL_SIGMA, RUN, _conditioning, _tiny_qwen_model
from tiny_qwen_fun import DIM, HEAD_DIM, HEADS, fun_weights, tiny_fun_controlnet

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the Qwen Fun sampling tests")]

FUN = "qwen_fun.safetensors"
BASE_BLOCKS = 7
PLACES = (0, 3)  # 2 control blocks over 7 base blocks: every 7 // 2 = 3 blocks from block 0
REL_TOL = 1e-4
APPLY = "CNR_ApplyControlResiduals"
REFERENCE_RULE = "reference (binary mask, nearest, SD3 shift)"


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def weights(nodes, tmp_path_factory):
    """A tiny Fun file for 16-channel latents (control_img_in 132 wide), in a controlnet folder."""
    weights = fun_weights(tiny_fun_controlnet(seed=3, depth=2, latent_channels=CHANNELS))
    write_controlnet_folder(tmp_path_factory, "qwen_fun", {FUN: weights})
    return weights


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return OneFrameVAE(tiny_sd3_vae())


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_qwen_model(nodes, num_layers=BASE_BLOCKS)


def _loaded(nodes, vae, curve_sqrt=None):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", FUN), vae)
    return control if curve_sqrt is None else node_output(nodes, "CNR_QwenFunStrength", control, curve_sqrt)


def _ours(nodes, model, vae, strength=0.8, curve_sqrt=None, **optional):
    return node_output(nodes, APPLY, model, _loaded(nodes, vae, curve_sqrt), IMAGE, strength, 0.0, 1.0, "balanced",
                       "crop", MODEL_SIGMA, **optional)


def _comfy_blocks(weights):
    """ComfyUI's own Qwen-Image blocks holding the Fun control blocks' weights, and their projections."""
    import comfy.ldm.qwen_image.model as qwen
    import comfy.ops
    blocks = []
    for i in range(2):
        prefix = f"control_blocks.{i}."
        block = qwen.QwenImageTransformerBlock(dim=DIM, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
                                               operations=comfy.ops.disable_weight_init)
        own = {k[len(prefix):]: v for k, v in weights.items()
               if k.startswith(prefix) and not k[len(prefix):].startswith(("before_proj.", "after_proj."))}
        block.load_state_dict(own, strict=True)
        blocks.append(block.eval())
    return blocks


def _reference_hint(vae, latent_format, image):
    """The control image's normalised latent, the mask and inpaint channels zeros (no mask, no image)."""
    latent = latent_format.process_in(vae.encode(image))
    return torch.cat((latent, torch.zeros(latent.shape[0], CHANNELS + 1, *latent.shape[2:])), dim=1)


def _reference_wrapper(model, vae, weights, strength):
    """A UNet function wrapper adding the Fun skips as the reference computes them (see the module docstring)."""
    dm = model.model.diffusion_model
    blocks = _comfy_blocks(weights)
    hint = _reference_hint(vae, model.model.latent_format, IMAGE)

    def linear(name, t):
        return F.linear(t, weights[name + ".weight"], weights[name + ".bias"])

    def skips(x, timesteps, context):
        image, img_ids, _ = dm.process_img(x)
        hint_tokens = dm.process_img(hint.expand(x.shape[0], -1, -1, -1, -1))[0]
        # ComfyUI's Qwen-Image text positions (the grids here are even: reference and ComfyUI agree).
        start = max(x.shape[-1] // 2 // 2, x.shape[-2] // 2 // 2)
        txt_ids = torch.arange(start, start + context.shape[1]).reshape(1, -1, 1).repeat(x.shape[0], 1, 3)
        rope = dm.pe_embedder(torch.cat((txt_ids, img_ids), dim=1)).to(x.dtype).contiguous()
        image = dm.img_in(image)
        text = dm.txt_in(dm.txt_norm(context))
        temb = dm.time_text_embed(timesteps, image)
        c = linear("control_blocks.0.before_proj", linear("control_img_in", hint_tokens)) + image
        out = []
        for i, block in enumerate(blocks):
            text, c = block(hidden_states=c, encoder_hidden_states=text, encoder_hidden_states_mask=None, temb=temb,
                            image_rotary_emb=rope)
            out.append(linear(f"control_blocks.{i}.after_proj", c) * strength)
        return out

    def wrapper(apply_model, args):
        c = args["c"]
        timesteps = model.model.model_sampling.timestep(args["timestep"]).float()
        with torch.no_grad():
            placed = [None] * BASE_BLOCKS
            for place, skip in zip(PLACES, skips(args["input"], timesteps, c["c_crossattn"])):
                placed[place] = skip
        return apply_model(args["input"], args["timestep"], **dict(c, control={"input": placed}))
    return wrapper


def _sample(model):
    return comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)


def test_sampling_through_the_apply_node_equals_the_reference_skips_on_comfyuis_model(nodes, weights, vae, model):
    reference = model.clone()
    reference.set_model_unet_function_wrapper(_reference_wrapper(model, vae, weights, 0.8))
    expected = _sample(reference)
    got = _sample(_ours(nodes, model, vae, strength=0.8))
    assert rel_diff(_sample(model), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL


def test_zero_strength_leaves_sampling_unchanged(nodes, weights, vae, model):
    assert torch.equal(_sample(_ours(nodes, model, vae, strength=0.0)), _sample(model))


def test_comfyuis_square_root_curve_is_the_linear_one_at_the_root(nodes, weights, vae, model):
    rooted = _sample(_ours(nodes, model, vae, strength=0.25, curve_sqrt=True))
    assert torch.equal(rooted, _sample(_ours(nodes, model, vae, strength=0.5)))
    assert rel_diff(_sample(_ours(nodes, model, vae, strength=0.25)), rooted) > 1e-3, "the curve must matter"


def test_the_binding_places_the_skips_on_the_models_own_block_count(nodes, weights, vae, model):
    from cnr_pack.controlnet_core.residuals import ControlResiduals
    from cnr_pack.nodes.bindings.registry import bind
    binding = bind(model, _loaded(nodes, vae), APPLY)
    skips = ControlResiduals(input=(torch.zeros(1), torch.ones(1)))
    placed = binding.expand(skips).input
    assert [i for i, t in enumerate(placed) if t is not None] == list(PLACES) and len(placed) == BASE_BLOCKS
    assert (binding.patch, binding.input_popped, binding.control.net.base is not None) == (2, False, True)
    assert _loaded(nodes, vae).net.base is None, "the loaded ControlNet is left without the MODEL's embedders"


def test_the_inpaint_mask_and_image_of_cnr_inpaintcontrol_fill_the_mask_and_inpaint_channels(nodes, weights, vae,
                                                                                              model):
    from cnr_pack.nodes.bindings.registry import bind
    mask = torch.zeros(1, 64, 96)
    mask[:, 16:48, 32:80] = 1.0
    inpaint = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    control = node_output(nodes, "CNR_InpaintControl", _loaded(nodes, vae), mask, REFERENCE_RULE,
                          inpaint_image=inpaint.movedim(1, -1))
    control_image = IMAGE.movedim(-1, 1)
    hint = bind(model, control, APPLY).encode_hint(control_image)
    latent_format = model.model.latent_format
    keep = 1 - mask[:, None, ::8, ::8]
    grey = torch.where(mask[:, None] >= 0.5, 0.5, inpaint)
    assert hint.shape == (1, 2 * CHANNELS + 1, 8, 12)
    def latent(pixels):
        return latent_format.process_in(vae.encode(pixels.movedim(1, -1)))[:, :, 0]

    assert torch.allclose(hint[:, :CHANNELS], latent(control_image))
    assert torch.equal(hint[:, CHANNELS:CHANNELS + 1], keep)
    assert torch.allclose(hint[:, CHANNELS + 1:], latent(grey))


def test_cnr_inpaintcontrol_refuses_comfyuis_alimama_rule_on_a_fun_controlnet(nodes, weights, vae):
    with pytest.raises(ValueError, match="CNR_InpaintControl: rule: .*Fun ControlNet"):
        node_output(nodes, "CNR_InpaintControl", _loaded(nodes, vae), torch.ones(1, 64, 96),
                    "ComfyUI (soft mask, nearest-exact, no SD3 shift)")


def test_cnr_inpaintcontrol_refuses_an_inpaint_image_of_another_size_than_the_mask(nodes, weights, vae):
    with pytest.raises(ValueError, match="CNR_InpaintControl: inpaint_image: is 96x64 but the mask is 48x32"):
        node_output(nodes, "CNR_InpaintControl", _loaded(nodes, vae), torch.ones(1, 32, 48), REFERENCE_RULE,
                    inpaint_image=IMAGE)


def test_a_fun_controlnet_on_an_sd15_model_is_refused_naming_node_and_input(nodes, weights, vae):
    with pytest.raises(ValueError) as err:
        _ours(nodes, comfy_host.tiny_unet(), vae)
    message = str(err.value)
    assert message.startswith(f"{APPLY}: controlnet: '{FUN}' is a QWEN_IMAGE ControlNet") and "SD15" in message


def _tiny_flux_model():
    """ComfyUI's own Flux MODEL at a tiny width (its weights stay unset: it is refused before it runs)."""
    import comfy.model_patcher
    import comfy.supported_models
    config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
              "hidden_size": 32, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1, "depth_single_blocks": 1,
              "axes_dim": [4, 6, 6], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": False}
    return comfy.model_patcher.ModelPatcher(comfy.supported_models.Flux(config).get_model({}), load_device="cpu",
                                            offload_device="cpu")


def test_a_fun_controlnet_on_a_flux_model_is_refused_naming_node_and_input(nodes, weights, vae):
    with pytest.raises(ValueError, match=rf"^{APPLY}: controlnet: '{FUN}' is a QWEN_IMAGE ControlNet but the model is "
                                         r"Flux"):
        _ours(nodes, _tiny_flux_model(), vae)


def test_a_base_with_fewer_blocks_than_control_blocks_is_refused_naming_the_model(nodes, weights, vae):
    with pytest.raises(ValueError, match=rf"^{APPLY}: model: '{FUN}': a Fun ControlNet with 2 control blocks needs a "
                                         r"base model with at least as many transformer blocks; this one has 1"):
        _ours(nodes, _tiny_qwen_model(nodes, num_layers=1), vae)


def test_the_fun_controlnet_without_its_hint_vae_is_refused_naming_the_node_to_add(nodes, weights, vae, model):
    control = node_output(nodes, "CNR_ControlNetLoader", FUN)
    with pytest.raises(ValueError, match=rf"^{APPLY}: controlnet: .*connect the loader through CNR_HintVAE"):
        node_output(nodes, APPLY, model, control, IMAGE, 1.0, 0.0, 1.0, "balanced", "crop", MODEL_SIGMA)


def test_the_strength_curve_node_refuses_another_controlnet(nodes):
    from cnr_pack.controlnet_core.loading.registry import load_controlnet
    from cnr_pack.nodes.control import wrap_controlnet
    from tiny_qwen import tiny_qwen_controlnet
    control = wrap_controlnet(load_controlnet(tiny_qwen_controlnet().state_dict()), "qwen_union.safetensors")
    with pytest.raises(ValueError, match=r"^CNR_QwenFunStrength: controlnet: 'qwen_union.safetensors' is not a "
                                         r"Qwen-Image Fun ControlNet"):
        node_output(nodes, "CNR_QwenFunStrength", control, True)
