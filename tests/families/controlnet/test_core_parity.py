"""Our residuals equal diffusers' ControlNetModel for the same weights, in every format."""
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet, original_to_diffusers
from cnr_pack.controlnet_core.injection.weighting import block_scales, guess_mode_weights, weight_residuals
from tiny_models import (sample_inputs, sdxl_y, tiny_sd15_diffusers, tiny_sd2_diffusers, tiny_sdxl_diffusers,
                         TEXT_EMBED_DIM)

TOL = 1e-5


def _max_diff(ours, theirs_down, theirs_mid):
    diffs = [(a - b).abs().max().item() for a, b in zip(ours.output, theirs_down)]
    return max(diffs + [(ours.middle[0] - theirs_mid).abs().max().item()])


def _sdxl_inputs():
    x, t, context, hint = sample_inputs()
    gen = torch.Generator().manual_seed(5)
    text = torch.randn(2, TEXT_EMBED_DIM, generator=gen)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [96.0, 64.0, 8.0, 0.0, 64.0, 64.0]])
    return x, t, context, hint, text, time_ids


def _sources(reference, tmp_path, fmt):
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    if fmt == "diffusers":
        return sd
    if fmt == "original":
        return {"control_model." + k: v for k, v in diffusers_to_original(sd).items()}
    if fmt == "original-bare.safetensors":
        path = tmp_path / "cn.safetensors"
        save_file(diffusers_to_original(sd), str(path))
        return path
    if fmt == "diffusers.safetensors":
        path = tmp_path / "diffusion_pytorch_model.safetensors"
        save_file(sd, str(path))
        return path
    if fmt == "original.pth":
        path = tmp_path / "cn.pth"
        torch.save({"state_dict": {"control_model." + k: v for k, v in diffusers_to_original(sd).items()}}, path)
        return path
    raise AssertionError(fmt)


FORMATS = ["diffusers", "original", "original-bare.safetensors", "diffusers.safetensors", "original.pth"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("factory", [tiny_sd15_diffusers, tiny_sd2_diffusers], ids=["sd15", "sd2"])
def test_twelve_residual_controlnets_equal_diffusers(factory, fmt, tmp_path):
    reference = factory()
    ours = load_controlnet(_sources(reference, tmp_path, fmt), dtype=torch.float32)
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        down, mid = reference(x, t, context, hint, return_dict=False)
        res = ours(x, t, context, hint)
    assert len(res.output) == 12
    assert ours.config.use_linear_in_transformer == (factory is tiny_sd2_diffusers)
    assert mid.abs().max() > 1e-3, "random weights must give non-zero residuals"
    assert _max_diff(res, down, mid) <= TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_sdxl_residuals_equal_diffusers(fmt, tmp_path):
    reference = tiny_sdxl_diffusers()
    ours = load_controlnet(_sources(reference, tmp_path, fmt), dtype=torch.float32)
    x, t, context, hint, text, time_ids = _sdxl_inputs()
    with torch.no_grad():
        down, mid = reference(x, t, context, hint, added_cond_kwargs={"text_embeds": text, "time_ids": time_ids},
                              return_dict=False)
        res = ours(x, t, context, hint, y=sdxl_y(text, time_ids))
    assert len(res.output) == 9
    assert _max_diff(res, down, mid) <= TOL


def test_sdxl_variant_with_fewer_transformer_blocks_is_detected():
    ours = load_controlnet(tiny_sdxl_diffusers().state_dict())
    assert ours.config.transformer_depth == (0, 0, 1, 1, 2, 2)
    assert ours.config.use_linear_in_transformer
    assert ours.config.adm_in_channels == TEXT_EMBED_DIM + 48


def test_guess_mode_equals_logspace_scaled_residuals():
    reference = tiny_sd15_diffusers()
    ours = load_controlnet(reference.state_dict())
    x, t, context, hint = sample_inputs()
    scale = 0.7
    with torch.no_grad():
        down, mid = reference(x, t, context, hint, conditioning_scale=scale, guess_mode=True, return_dict=False)
        res = weight_residuals(ours(x, t, context, hint), [scale * w for w in guess_mode_weights(12)])
    assert _max_diff(res, down, mid) <= TOL


def test_conditioning_scale_equals_balanced_strength():
    reference = tiny_sd15_diffusers()
    ours = load_controlnet(reference.state_dict())
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        down, mid = reference(x, t, context, hint, conditioning_scale=0.35, return_dict=False)
        res = weight_residuals(ours(x, t, context, hint), block_scales(12, strength=0.35))
    assert _max_diff(res, down, mid) <= TOL


def test_global_pool_equals_diffusers_global_pool_conditions():
    reference = tiny_sd15_diffusers()
    ours = load_controlnet(reference.state_dict(), global_pool=True)
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        reference.config.global_pool_conditions = True
        down, mid = reference(x, t, context, hint, return_dict=False)
        res = ours(x, t, context, hint)
    assert res.middle[0].shape[-2:] == (1, 1)
    assert _max_diff(res, down, mid) <= TOL


def test_format_converter_round_trips_every_key():
    sd = tiny_sdxl_diffusers().state_dict()
    back = original_to_diffusers(diffusers_to_original(sd))
    assert set(back) == set(sd)
    assert all(back[k] is sd[k] for k in sd)


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_files_load_to_the_requested_compute_dtype(stored, tmp_path):
    sd = {k: v.to(stored) for k, v in tiny_sd15_diffusers().state_dict().items()}
    path = tmp_path / "cn_half.safetensors"
    save_file(sd, str(path))
    ours = load_controlnet(path, dtype=torch.float32)
    params = dict(ours.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    original = diffusers_to_original(sd)
    assert all(torch.equal(params[k], original[k].float()) for k in params)
    kept = load_controlnet(path)
    assert next(kept.parameters()).dtype == stored
