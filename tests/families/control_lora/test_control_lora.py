"""Control-LoRA: the merged ControlNet equals diffusers' ControlNetModel holding W_unet + up @ down."""
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import ControlNet, load_controlnet, read_state_dict
from cnr_pack.controlnet_core.families.control_lora.format import build, claims
from cnr_pack.controlnet_core.families.control_lora.model import ControlLora
from tiny_control_lora import RANK, control_lora_for, original_layout_unet, tiny_sd15_unet, tiny_sdxl_unet
from tiny_models import TEXT_EMBED_DIM, sample_inputs, sdxl_y, tiny_sd15_diffusers

TOL = 1e-5


def _max_diff(ours, down, mid):
    return max((a - b).abs().max().item() for a, b in zip(ours.tensors, list(down) + [mid]))


def _sdxl_cond(batch: int = 2):
    gen = torch.Generator().manual_seed(5)
    text = torch.randn(batch, TEXT_EMBED_DIM, generator=gen)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [96.0, 64.0, 8.0, 0.0, 64.0, 64.0]])[:batch]
    return text, time_ids


@pytest.mark.parametrize("layout", ["diffusers", "original", "original-prefixed"])
def test_sd15_control_lora_merged_on_the_base_unet_equals_diffusers(layout):
    unet = tiny_sd15_unet()
    file, oracle = control_lora_for(unet)
    base = {"diffusers": lambda: unet.state_dict(), "original": lambda: original_layout_unet(unet),
            "original-prefixed": lambda: original_layout_unet(unet, "model.diffusion_model.")}[layout]()
    ours = build(file, base_unet=base)
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        down, mid = oracle(x, t, context, hint, return_dict=False)
        res = ours(x, t, context, hint)
    assert isinstance(ours, ControlNet) and len(res.output) == 12
    assert mid.abs().max() > 1e-3, "random weights must give non-zero residuals"
    assert _max_diff(res, down, mid) <= TOL


def test_sdxl_control_lora_merged_on_the_base_unet_equals_diffusers():
    unet = tiny_sdxl_unet()
    file, oracle = control_lora_for(unet)
    ours = build(file, base_unet=unet.state_dict())
    x, t, context, hint = sample_inputs()
    text, time_ids = _sdxl_cond()
    with torch.no_grad():
        down, mid = oracle(x, t, context, hint, added_cond_kwargs={"text_embeds": text, "time_ids": time_ids},
                           return_dict=False)
        res = ours(x, t, context, hint, y=sdxl_y(text, time_ids))
    assert len(res.output) == 9
    assert _max_diff(res, down, mid) <= TOL


def test_control_lora_loads_without_base_weights_and_merges_later_to_the_same_controlnet(tmp_path):
    unet = tiny_sd15_unet()
    file, _ = control_lora_for(unet)
    path = tmp_path / "control-lora-tiny-rank4.safetensors"
    save_file(file, str(path))
    pending = build(read_state_dict(str(path)))
    assert isinstance(pending, ControlLora)
    assert (pending.config.rank, pending.config.hint_channels, pending.config.context_dim) == (RANK, 3, 32)
    assert pending.config.adm_in_channels is None
    direct = build(file, base_unet=unet.state_dict())
    later = pending.merge(unet.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), later.state_dict().values()))


def test_control_lora_family_is_read_from_the_file():
    sdxl, _ = control_lora_for(tiny_sdxl_unet())
    config = ControlLora.from_state_dict(sdxl).config
    assert config.family == "sdxl"
    assert config.adm_in_channels == TEXT_EMBED_DIM + 48


def test_merged_controlnet_shares_no_storage_with_the_base_weights():
    unet = tiny_sd15_unet()
    file, _ = control_lora_for(unet)
    base = unet.state_dict()
    ours = build(file, base_unet=base)
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        before = ours(x, t, context, hint).middle[0].clone()
        for v in base.values():
            v.add_(1.0)
        after = ours(x, t, context, hint).middle[0]
    assert torch.equal(before, after)


def test_merge_rounds_once_to_the_requested_compute_dtype():
    unet = tiny_sd15_unet()
    file, _ = control_lora_for(unet)
    full = build(file, base_unet=unet.state_dict())
    half = build(file, base_unet=unet.state_dict(), dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert all(torch.equal(a.half(), b) for a, b in zip(full.state_dict().values(), half.state_dict().values()))


def test_base_dtype_is_the_default_compute_dtype():
    unet = tiny_sd15_unet()
    file, _ = control_lora_for(unet)
    ours = build(file, base_unet={k: v.to(torch.bfloat16) for k, v in unet.state_dict().items()})
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())


def test_control_lora_detection_is_the_marker_key():
    file, _ = control_lora_for(tiny_sd15_unet())
    assert claims(file)
    assert not claims(tiny_sd15_diffusers().state_dict())


def test_load_controlnet_merges_a_control_lora_file_with_the_base_unet(tmp_path):
    unet = tiny_sd15_unet()
    file, oracle = control_lora_for(unet)
    path = tmp_path / "control-lora-tiny-rank4.safetensors"
    save_file({k: v.half() for k, v in file.items()}, str(path))
    ours = load_controlnet(path, dtype=torch.float32, base_unet=original_layout_unet(unet, "model.diffusion_model."))
    assert isinstance(ours, ControlNet) and not ours.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in ours.parameters())
    merged = build({k: v.half().float() for k, v in file.items()}, base_unet=unet.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), merged.state_dict().values()))


def test_load_controlnet_without_base_weights_returns_the_pending_control_lora():
    file, _ = control_lora_for(tiny_sd15_unet())
    assert isinstance(load_controlnet(file), ControlLora)
