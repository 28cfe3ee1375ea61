"""A Control-LoRA through the pack's nodes samples like ComfyUI's own ControlLora on the same weights."""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(7))
RANK = 4
CONTROL_ONLY = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def _conditioning(seed, sdxl):
    gen = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(1, 1280, generator=gen)} if sdxl else {}
    return [[torch.randn(1, 7, 32, generator=gen), extra]]


def _control_lora_file(model, sdxl, seed=3):
    """Random up/down pairs over the UNet's shared weights, random full tensors for the rest."""
    import comfy.cldm.cldm
    source = comfy_host.TINY_SDXL_CONFIG if sdxl else comfy_host.TINY_UNET_CONFIG
    cfg = {k: v for k, v in source.items() if k not in ("out_channels", "transformer_depth_output")}
    keys = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="meta", **cfg).state_dict()
    unet = model.model.diffusion_model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    file = {"lora_controlnet": torch.tensor([])}
    for key, meta in keys.items():
        if key.startswith(CONTROL_ONLY) or meta.ndim < 2:
            file[key] = torch.randn(meta.shape, generator=gen) * 0.05
        else:
            assert key in unet, key
            module = key[: -len(".weight")]
            file[module + ".up"] = torch.randn((meta.shape[0], RANK) + (1,) * (meta.ndim - 2), generator=gen) * 0.1
            file[module + ".down"] = torch.randn((RANK,) + tuple(meta.shape[1:]), generator=gen) * 0.1
    return file


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    nodes = comfy_host.boot()
    import folder_paths
    folder = tmp_path_factory.mktemp("control_lora")
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return nodes, folder


@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
def test_control_lora_matches_comfyui_control_lora_sampling(host, sdxl):
    nodes, folder = host
    import comfy.controlnet
    model = comfy_host.tiny_unet(sdxl=sdxl)
    name = f"control-lora-tiny-{'sdxl' if sdxl else 'sd15'}-rank{RANK}.safetensors"
    save_file(_control_lora_file(model, sdxl), str(folder / name))
    pos, neg = _conditioning(1, sdxl), _conditioning(2, sdxl)
    native = comfy.controlnet.load_controlnet(str(folder / name))
    assert type(native).__name__ == "ControlLora"
    native_pos, native_neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, HINT, 0.8, 0.0, 1.0)[:2]
    expected = comfy_host.sample(model, native_pos, native_neg, steps=4)
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]
    patched = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]().apply(
        model, ours, HINT, 0.8, 0.0, 1.0, "balanced", "crop", "model sigma (ComfyUI)")[0]
    got = comfy_host.sample(patched, pos, neg, steps=4)
    plain = comfy_host.sample(model, pos, neg, steps=4)
    assert (expected - plain).abs().max() > 1e-2
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def _apply(nodes, model, control, strength=1.0):
    return nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]().apply(
        model, control, HINT, strength, 0.0, 1.0, "balanced", "crop", "model sigma (ComfyUI)")[0]


def _load(nodes, name):
    return nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]


def test_control_lora_is_merged_once_per_model(host):
    nodes, folder = host
    model = comfy_host.tiny_unet(seed=4)
    name = "control-lora-tiny-once.safetensors"
    save_file(_control_lora_file(model, sdxl=False, seed=5), str(folder / name))
    ours = _load(nodes, name)
    pos, neg = _conditioning(1, False), _conditioning(2, False)
    patched = [_apply(nodes, model, ours), _apply(nodes, model, ours, 0.5),
               _apply(nodes, comfy_host.tiny_unet(seed=4), ours)]
    for m in patched:
        comfy_host.sample(m, pos, neg, steps=1)
    nets = [m.model_options["model_function_wrapper"].control.net for m in patched]
    assert nets[0] is nets[1]
    assert nets[2] is not nets[0]
    assert ours.patcher is None, "the loader's output must stay the pending Control-LoRA"


def _with_lora(model, seed=9):
    """A clone of ``model`` carrying a LoRA-like patch (a weight difference) on every encoder weight."""
    gen = torch.Generator().manual_seed(seed)
    keys = [k for k, v in model.model.state_dict().items()
            if k.startswith("diffusion_model.input_blocks.") and k.endswith(".weight") and v.ndim >= 2]
    clone = model.clone()
    clone.add_patches({k: (torch.randn(model.model.state_dict()[k].shape, generator=gen) * 0.05,) for k in keys})
    return clone


def test_control_lora_merges_with_the_weights_of_the_model_it_samples_not_of_one_sampled_before(host):
    nodes, folder = host
    import comfy.controlnet
    pos, neg = _conditioning(1, False), _conditioning(2, False)
    fresh_model = comfy_host.tiny_unet(seed=6)
    save_file(_control_lora_file(fresh_model, sdxl=False, seed=7), str(folder / "control-lora-fresh.safetensors"))
    expected = comfy_host.sample(_apply(nodes, fresh_model, _load(nodes, "control-lora-fresh.safetensors")),
                                 pos, neg, steps=3)

    model = comfy_host.tiny_unet(seed=6)
    save_file(_control_lora_file(model, sdxl=False, seed=7), str(folder / "control-lora-after-lora.safetensors"))
    comfy_host.sample(_with_lora(model), pos, neg, steps=2)  # leaves its LoRA in the shared UNet
    got = comfy_host.sample(_apply(nodes, model, _load(nodes, "control-lora-after-lora.safetensors")),
                            pos, neg, steps=3)
    native = comfy.controlnet.load_controlnet(str(folder / "control-lora-after-lora.safetensors"))
    native_pos, native_neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, HINT, 1.0, 0.0,
                                                                              1.0)[:2]
    comfyui = comfy_host.sample(model, native_pos, native_neg, steps=3)
    assert torch.equal(got, expected)
    assert torch.allclose(got, comfyui, rtol=1e-4, atol=1e-4)


def test_control_lora_on_a_lora_model_merges_with_the_lora_weights_as_comfyui_does(host):
    nodes, folder = host
    import comfy.controlnet
    pos, neg = _conditioning(1, False), _conditioning(2, False)
    model = comfy_host.tiny_unet(seed=8)
    name = "control-lora-on-lora.safetensors"
    save_file(_control_lora_file(model, sdxl=False, seed=3), str(folder / name))
    lora = _with_lora(model)
    got = comfy_host.sample(_apply(nodes, lora, _load(nodes, name)), pos, neg, steps=3)
    plain = comfy_host.sample(_apply(nodes, model, _load(nodes, name)), pos, neg, steps=3)
    native = comfy.controlnet.load_controlnet(str(folder / name))
    native_pos, native_neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, HINT, 1.0, 0.0,
                                                                              1.0)[:2]
    comfyui = comfy_host.sample(lora, native_pos, native_neg, steps=3)
    assert (got - plain).abs().max() > 1e-3, "the LoRA must reach the merged ControlNet"
    assert torch.allclose(got, comfyui, rtol=1e-4, atol=1e-4)


def test_sdxl_control_lora_on_an_sd15_model_is_refused_by_the_apply_node(host):
    nodes, folder = host
    name = "control-lora-tiny-sdxl-for-refusal.safetensors"
    save_file(_control_lora_file(comfy_host.tiny_unet(sdxl=True), sdxl=True), str(folder / name))
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]
    with pytest.raises(ValueError, match=r"CNR_ApplyControlResiduals: controlnet: '.*' is a SDXL ControlNet"):
        nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]().apply(
            comfy_host.tiny_unet(), ours, HINT, 1.0, 0.0, 1.0, "balanced", "crop", "model sigma (ComfyUI)")
