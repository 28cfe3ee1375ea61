"""T2I-Adapters equal diffusers' ``T2IAdapter`` and land where ComfyUI's adapter and diffusers' UNet add them."""
import importlib.util

import diffusers
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import load_controlnet
from cnr_pack.controlnet_core.errors import ControlNetFormatError
from cnr_pack.controlnet_core.errors import ControlNetInputError
from cnr_pack.controlnet_core.families.t2i_adapter.format import build, claims
from comfy_host import comfyui_root
from tiny_models import randomize_all, tiny_sd15_diffusers
from tiny_t2i import CHANNELS, KINDS, tiny_adapter, to_original

TOL = 1e-5
def comfy_adapter_module():
    """ComfyUI's ``comfy/t2i_adapter/adapter.py`` (plain torch) from the host in use, read without booting it."""
    path = comfyui_root() / "comfy" / "t2i_adapter" / "adapter.py"
    spec = importlib.util.spec_from_file_location("comfy_t2i_adapter_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def comfy_adapter(original_sd: dict, kind: str, use_conv: bool = False, ksize: int = 1):
    mod = comfy_adapter_module()
    cin = original_sd["body.0.in_conv.weight" if kind == "light_adapter" else "conv_in.weight"].shape[1]
    if kind == "light_adapter":
        net = mod.Adapter_light(channels=CHANNELS, nums_rb=2, cin=cin)
    else:
        net = mod.Adapter(channels=CHANNELS, nums_rb=2, cin=cin, ksize=ksize, sk=True, use_conv=use_conv,
                          xl=kind == "full_adapter_xl")
    net.load_state_dict(original_sd, strict=True)
    return net.eval()


def comfy_layout(output, xl: bool):
    """ComfyUI's adapter output as (input per block in block order, middle): current and 2024 hosts."""
    if isinstance(output, dict):  # current: lists as the UNet pops them, deepest block first
        return list(reversed(output["input"])), list(output.get("middle", []))
    # 2024 host: one flat list in block order, the SDXL middle feature last (T2IAdapter.get_control).
    return (list(output[:-1]), list(output[-1:])) if xl else (list(output), [])


def hint_for(kind: str, latent: int = 16, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, latent * 8, latent * 8, generator=torch.Generator().manual_seed(seed))


def max_diff(ours, theirs) -> float:
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_features_equal_diffusers_in_order_in_both_layouts(kind, layout):
    reference = tiny_adapter(kind)
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    ours = build(sd if layout == "diffusers" else to_original(sd, kind))
    hint = hint_for(kind)
    with torch.no_grad():
        theirs = reference(hint)
        res = ours(torch.zeros(2, 4, 16, 16), torch.tensor([1.0, 2.0]), None, hint)
    assert theirs[-1].abs().max() > 1e-3, "random weights must give non-zero features"
    assert max_diff(res.tensors, theirs) <= TOL


@pytest.mark.comfy
@pytest.mark.parametrize("kind", list(KINDS))
def test_original_layout_is_what_comfyui_loads_and_slots_are_where_it_adds_them(kind):
    sd = to_original(tiny_adapter(kind).state_dict(), kind)
    theirs = comfy_adapter(sd, kind)
    hint = hint_for(kind)
    with torch.no_grad():
        comfy_input, comfy_middle = comfy_layout(theirs(hint), kind == "full_adapter_xl")
        res = build(sd)(torch.zeros(2, 4, 16, 16), torch.zeros(2), None, hint)
    # ComfyUI's SDXL list has one more trailing None than SDXL has input blocks; nothing lands there.
    assert all(t is None for t in comfy_input[len(res.input):])
    assert [t is None for t in res.input] == [t is None for t in comfy_input[:len(res.input)]]
    assert max_diff([t for t in res.input if t is not None], [t for t in comfy_input if t is not None]) <= TOL
    assert len(res.middle) == len(comfy_middle)
    if comfy_middle:
        assert max_diff(res.middle, comfy_middle) <= TOL


def tiny_unet(sdxl: bool, seed: int = 3) -> diffusers.UNet2DConditionModel:
    torch.manual_seed(seed)
    if sdxl:
        unet = diffusers.UNet2DConditionModel(
            block_out_channels=CHANNELS[:3], layers_per_block=2, cross_attention_dim=32, attention_head_dim=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), use_linear_projection=True)
    else:
        unet = diffusers.UNet2DConditionModel(block_out_channels=CHANNELS, layers_per_block=2,
                                              cross_attention_dim=32, attention_head_dim=8)
    return randomize_all(unet, seed)


def comfy_input_blocks(unet: diffusers.UNet2DConditionModel) -> list:
    """The diffusers module ending each of ComfyUI's input blocks (conv_in, res[+attn] pairs, downsamplers)."""
    blocks = [unet.conv_in]
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None)
        blocks += [attentions[j] if attentions else resnet for j, resnet in enumerate(down.resnets)]
        if down.downsamplers:
            blocks.append(down.downsamplers[0])
    return blocks


def add_to_output(residual: torch.Tensor):
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + residual,) + output[1:]
        return output + residual
    return hook


def run_with_comfy_injection(unet, residuals, x, t, context) -> torch.Tensor:
    """The UNet with ``input[k]`` added to input block k's output and ``middle`` after the mid block."""
    blocks = comfy_input_blocks(unet)
    assert len(residuals.input) == len(blocks)
    handles = [block.register_forward_hook(add_to_output(r)) for block, r in zip(blocks, residuals.input)
               if r is not None]
    handles += [unet.mid_block.register_forward_hook(add_to_output(r)) for r in residuals.middle]
    try:
        return unet(x, t, context).sample
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("kind", list(KINDS))
def test_unet_with_our_slots_equals_diffusers_intrablock_residuals(kind):
    adapter = tiny_adapter(kind)
    unet = tiny_unet(sdxl=kind == "full_adapter_xl")
    gen = torch.Generator().manual_seed(7)
    latent = 8
    x, context = torch.randn(2, 4, latent, latent, generator=gen), torch.randn(2, 7, 32, generator=gen)
    t, hint = torch.tensor([900.0, 30.0]), hint_for(kind, latent)
    strength = 10.0  # diffusers' adapter_conditioning_scale, so that misplaced features show clearly
    with torch.no_grad():
        features = [f * strength for f in adapter(hint)]
        theirs = unet(x, t, context, down_intrablock_additional_residuals=features).sample
        plain = unet(x, t, context).sample
        residuals = build(adapter.state_dict())(x, t, context, hint).map(lambda f: f * strength)
        ours = run_with_comfy_injection(unet, residuals, x, t, context)
    assert (theirs - plain).abs().max() > 1e-3, "the features must change the UNet's output"
    assert (ours - theirs).abs().max().item() <= TOL


@pytest.mark.comfy
@pytest.mark.parametrize("ksize,use_conv", [(1, True), (3, False)], ids=["conv-downsample", "kernel-3"])
def test_original_variants_diffusers_cannot_express_match_comfyui(ksize, use_conv):
    mod = comfy_adapter_module()
    torch.manual_seed(0)
    net = randomize_all(mod.Adapter(channels=CHANNELS, nums_rb=2, cin=192, ksize=ksize, sk=True,
                                    use_conv=use_conv, xl=False), 0)
    hint = hint_for("full_adapter")
    with torch.no_grad():
        comfy_input, _ = comfy_layout(net(hint), xl=False)
        res = build(net.state_dict())(torch.zeros(2, 4, 16, 16), torch.zeros(2), None, hint)
    assert max_diff([t for t in res.input if t is not None], [t for t in comfy_input if t is not None]) <= TOL


@pytest.mark.comfy
@pytest.mark.parametrize("kind", list(KINDS))
def test_odd_latent_sizes_halve_like_comfyui(kind):
    sd = to_original(tiny_adapter(kind).state_dict(), kind)
    ours = build(sd)
    latent = (9, 11)
    size = ours.hint_size(*latent)
    hint = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        comfy_input, comfy_middle = comfy_layout(comfy_adapter(sd, kind)(hint), kind == "full_adapter_xl")
        res = ours(torch.zeros(1, 4, *latent), torch.zeros(1), None, hint)
    assert any(t.shape[-1] % 2 for t in res.tensors[:-1]), "some level must halve an odd size"
    assert max_diff(res.tensors, [t for t in comfy_input if t is not None] + comfy_middle) <= TOL


@pytest.mark.parametrize("kind", ["full_adapter", "full_adapter_xl"])
def test_hint_size_rounds_eight_times_the_latent_up_like_comfyui(kind):
    ours = build(tiny_adapter(kind).state_dict())
    unshuffle = KINDS[kind][1]
    for h, w in [(8, 8), (9, 11), (13, 6)]:
        # ComfyUI's T2IAdapter.scale_image_to: 8x the latent, rounded up to the unshuffle amount.
        expected = tuple(-(-8 * n // unshuffle) * unshuffle for n in (h, w))
        assert ours.hint_size(h, w) == expected
    assert ours.hint_downscale == 8


def test_gray_adapter_averages_an_rgb_hint_like_comfyui():
    reference = tiny_adapter("full_adapter", in_channels=1)
    ours = build(reference.state_dict())
    hint = hint_for("full_adapter")
    with torch.no_grad():
        theirs = reference(hint.mean(1, keepdim=True))
        res = ours(torch.zeros(2, 4, 16, 16), torch.zeros(2), None, hint)
    assert ours.config.hint_channels == 1
    assert max_diff(res.tensors, theirs) <= TOL


def test_forward_ignores_latent_values_timesteps_and_context():
    ours = build(tiny_adapter("full_adapter").state_dict())
    hint = hint_for("full_adapter")
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        a = ours(torch.zeros(2, 4, 16, 16), torch.tensor([999.0, 999.0]), None, hint)
        b = ours(torch.randn(2, 4, 16, 16, generator=gen), torch.tensor([1.0, 5.0]),
                 torch.randn(2, 7, 32, generator=gen), hint)
    assert max_diff(a.tensors, b.tensors) == 0.0


def test_cached_embedding_gives_the_same_residuals_and_survives_in_place_scaling():
    ours = build(tiny_adapter("full_adapter_xl").state_dict())
    x, hint = torch.zeros(2, 4, 16, 16), hint_for("full_adapter_xl")
    with torch.no_grad():
        direct = ours(x, torch.zeros(2), None, hint)
        embedding = ours.embed_hint(hint)
        kept = [f.clone() for f in embedding]
        first = ours(x, torch.zeros(2), None, hint[:1], hint_embedding=embedding)
        for t in first.tensors:
            t.mul_(0.0)
        second = ours(x, torch.zeros(2), None, hint[:1], hint_embedding=embedding)
    assert max_diff(embedding, kept) == 0.0
    assert max_diff(second.tensors, direct.tensors) == 0.0


def test_one_hint_broadcasts_to_the_latent_batch():
    ours = build(tiny_adapter("light_adapter").state_dict())
    hint = hint_for("light_adapter", batch=1)
    with torch.no_grad():
        res = ours(torch.zeros(3, 4, 16, 16), torch.zeros(3), None, hint)
        single = ours.embed_hint(hint)
    assert res.batch == 3
    assert max_diff([t[2:] for t in res.tensors], single) == 0.0


def test_a_hint_of_the_wrong_size_is_refused_with_the_size_it_needs():
    ours = build(tiny_adapter("full_adapter_xl").state_dict())
    with pytest.raises(ControlNetInputError, match=r"needs a 80x64 hint for a 9x8 latent.*multiple of 16"):
        ours(torch.zeros(1, 4, 9, 8), torch.zeros(1), None, torch.zeros(1, 3, 72, 64))


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_layout_is_claimed(kind):
    sd = tiny_adapter(kind).state_dict()
    assert claims(sd) and claims(to_original(sd, kind))


def test_a_controlnet_is_not_claimed():
    assert not claims(tiny_sd15_diffusers().state_dict())


def test_incomplete_weights_name_the_missing_tensor():
    sd = to_original(tiny_adapter("full_adapter").state_dict(), "full_adapter")
    del sd["body.0.block2.weight"]
    with pytest.raises(ControlNetFormatError, match=r"missing body\.0\.resnets\.0\.block2\.weight"):
        build(sd)


def test_a_first_convolution_fitting_no_hint_is_refused():
    sd = tiny_adapter("full_adapter").state_dict()
    sd["adapter.conv_in.weight"] = torch.zeros(32, 100, 3, 3)
    with pytest.raises(ControlNetFormatError, match="reads 100 channels"):
        build(sd)


def test_build_casts_to_the_requested_dtype():
    ours = build(tiny_adapter("full_adapter").state_dict(), dtype=torch.float16)
    res = ours(torch.zeros(1, 4, 8, 8), torch.zeros(1), None, torch.rand(1, 3, 64, 64))
    assert {p.dtype for p in ours.parameters()} == {torch.float16}
    assert {t.dtype for t in res.tensors} == {torch.float16}


@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_load_controlnet_reads_adapter_files_in_both_layouts(kind, layout, tmp_path):
    reference = tiny_adapter(kind)
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    path = tmp_path / "adapter.safetensors"
    save_file(sd if layout == "diffusers" else to_original(sd, kind), str(path))
    ours = load_controlnet(path, dtype=torch.float32)
    hint = hint_for(kind)
    with torch.no_grad():
        res = ours(torch.zeros(2, 4, 16, 16), torch.zeros(2), None, hint)
        theirs = reference(hint)
    assert max_diff(res.tensors, theirs) <= TOL


def test_load_controlnet_names_the_file_of_broken_adapter_weights(tmp_path):
    sd = tiny_adapter("full_adapter").state_dict()
    del sd["adapter.body.1.in_conv.weight"]
    path = tmp_path / "broken.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ControlNetFormatError, match=r"broken\.safetensors: weights do not fit the detected full"):
        load_controlnet(path)


def test_contradicting_shapes_are_a_format_error_naming_the_tensor():
    sd = tiny_adapter("full_adapter").state_dict()
    sd["adapter.conv_in.weight"] = torch.zeros(16, 192, 3, 3)
    with pytest.raises(ControlNetFormatError, match=r"wrong shape .*e\.g\. conv_in\.weight is \[16, 192, 3, 3\]"):
        build(sd)


@pytest.mark.comfy
def test_sdxl_features_stack_block_by_block_with_comfyuis_own_sdxl_adapter():
    from cnr_pack.controlnet_core.residuals import merge_control
    sd = to_original(tiny_adapter("full_adapter_xl").state_dict(), "full_adapter_xl")
    hint = hint_for("full_adapter_xl", batch=1)
    with torch.no_grad():
        comfy_input, comfy_middle = comfy_layout(comfy_adapter(sd, "full_adapter_xl")(hint), xl=True)
        ours = build(sd)(torch.zeros(1, 4, 16, 16), torch.zeros(1), None, hint)
    # The dict as ComfyUI's T2IAdapter.get_control hands it to the UNet: input popped from the end.
    control = {"input": list(reversed(comfy_input)), "middle": comfy_middle, "output": []}
    merged = merge_control(control, ours)
    blocks = list(reversed(merged["input"]))
    assert len(blocks) == len(comfy_input)
    for theirs, mine, got in zip(comfy_input, list(ours.input) + [None], blocks):
        assert (got is None) == (theirs is None)
        if got is not None:
            assert torch.equal(got, theirs + mine)
    assert torch.equal(merged["middle"][0], comfy_middle[0] + ours.middle[0])


def test_a_pth_holding_the_weights_under_adapter_loads_as_comfyui_reads_it(tmp_path):
    reference = tiny_adapter("light_adapter")
    path = tmp_path / "t2iadapter_color.pth"
    torch.save({"adapter": to_original(reference.state_dict(), "light_adapter")}, path)
    ours = load_controlnet(path)
    hint = hint_for("light_adapter")
    with torch.no_grad():
        assert max_diff(ours.embed_hint(hint), reference(hint)) <= TOL


def test_soft_modes_use_a1111s_adapter_weights_and_need_four_features():
    from cnr_pack.controlnet_core.families.t2i_adapter.model import feature_scales
    # sd-webui-controlnet's hook.py: T2I-Adapter soft injection scales (0.25, 0.62, 0.825, 1.0) x weight.
    assert feature_scales(4, 2.0, "prompt", [1.0, 1.0, 0.5, 1.0]) == pytest.approx((0.5, 1.24, 0.825, 2.0))
    assert feature_scales(3, 2.0, "balanced") == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="weight exactly 4 adapter features; this adapter has 3"):
        feature_scales(3, 1.0, "controlnet")
