"""Residual reuse through ComfyUI's sampler: off and k = 1 change nothing, k = 2 halves the ControlNet forwards,
and reuse never crosses a window edge, a keyframe change or a different batch layout."""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from cnr_pack.controlnet_core import diffusers_to_original
from tiny_models import tiny_sd15_diffusers

pytestmark = pytest.mark.comfy

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(6))
STEPS = 10


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    comfy_host.boot()
    import folder_paths
    folder = tmp_path_factory.mktemp("controlnet_reuse")
    save_file(diffusers_to_original(tiny_sd15_diffusers(4).state_dict()), str(folder / "reuse.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return comfy_host.run_node("CNR_ControlNetLoader", control_net_name="reuse.safetensors")[0]


@pytest.fixture()
def forwards(control):
    """The sigma of every ControlNet forward (its timestep input, mapped back by the tests)."""
    seen = []
    handle = control.net.register_forward_pre_hook(lambda mod, inp: seen.append(float(inp[1][0])))
    yield seen
    handle.remove()


def _model():
    """The tiny UNet; the 2024 host, which does not report the run's schedule, is given it as ComfyUI 2025 does."""
    import comfy.samplers
    model = comfy_host.tiny_unet()
    if not comfy_host.is_current_host():
        sigmas = comfy.samplers.KSampler(_sampling_model(model), steps=STEPS, device="cpu", sampler="euler",
                                         scheduler="normal").sigmas
        model.model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    return model


def _sample(control, seed=0, **inputs):
    model = comfy_host.run_node("CNR_ApplyControlResiduals", model=_model(), controlnet=control, image=HINT,
                                **inputs)[0]
    return comfy_host.sample(model, comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS, seed=seed)


def _steps_of(timesteps):
    """The executed steps (0-based) whose timesteps the forwards saw."""
    import comfy.samplers
    model = _model()
    sigmas = comfy.samplers.KSampler(_sampling_model(model), steps=STEPS, device="cpu", sampler="euler",
                                     scheduler="normal").sigmas
    schedule = [float(model.model.model_sampling.timestep(s)) for s in sigmas[:-1]]
    return [min(range(STEPS), key=lambda i: abs(schedule[i] - t)) for t in timesteps]


def test_reuse_off_and_every_step_are_bit_identical(control):
    off = _sample(control)
    assert torch.equal(_sample(control, reuse_every=1), off)
    assert torch.equal(_sample(control, reuse_every=1, reuse_threshold=0.0), off)


def test_without_reuse_the_controlnet_runs_once_per_step(control, forwards):
    _sample(control)
    assert len(forwards) == STEPS


@pytest.mark.parametrize("k,steps", [(2, [0, 2, 4, 6, 8]), (3, [0, 3, 6, 9])])
def test_every_k_runs_the_controlnet_at_every_kth_step(control, forwards, k, steps):
    _sample(control, reuse_every=k)
    assert _steps_of(forwards) == steps


def test_reuse_every_two_changes_the_result_only_a_little(control):
    full, reused = _sample(control), _sample(control, reuse_every=2)
    plain = comfy_host.sample(_model(), comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS)
    assert not torch.equal(full, reused)
    assert (reused - full).abs().mean() < 0.5 * (full - plain).abs().mean()


def test_reuse_restarts_at_the_window_start_in_every_sampling(control, forwards):
    for seed in (0, 1):
        _sample(control, seed=seed, start_percent=0.3, end_percent=0.8, reuse_every=3)
    assert _steps_of(forwards) == [3, 6, 3, 6]


def test_a_keyframe_change_runs_the_controlnet_even_inside_a_reuse_interval(control, forwards):
    keyframes = comfy_host.run_node("CNR_StrengthKeyframe", start_percent=0.5, strength=0.5, guarantee_steps=1,
                                    inherit_missing=True, interpolation="none")[0]
    _sample(control, reuse_every=3, keyframes=keyframes)
    assert _steps_of(forwards) == [0, 3, 5, 8]


def test_reused_residuals_take_the_strength_of_the_step_that_reuses_them(control, forwards):
    ramp = comfy_host.run_node("CNR_StrengthKeyframe", start_percent=0.0, strength=0.2, guarantee_steps=1,
                               inherit_missing=True, interpolation="linear")[0]
    ramp = comfy_host.run_node("CNR_StrengthKeyframe", start_percent=0.5, strength=1.0, guarantee_steps=1,
                               inherit_missing=True, interpolation="none", prev_keyframes=ramp)[0]
    model = comfy_host.run_node("CNR_ApplyControlResiduals", model=_model(), controlnet=control, image=HINT,
                                reuse_every=2, keyframes=ramp)[0]
    middles = []

    def record(apply_model, args):
        middles.append(args["c"]["control"]["middle"][0].clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.model_options["model_function_wrapper"].previous = record
    comfy_host.sample(model, comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS)
    assert _steps_of(forwards) == [0, 2, 4, 5, 7, 9]  # step 5: the second keyframe takes over
    strengths = [0.2 + 0.8 * i / 5 for i in range(5)]  # the ramp reaches 1.0 at step 5
    for i in (1, 3):  # they reuse the residuals of the step before, at their own strength
        torch.testing.assert_close(middles[i], middles[i - 1] * (strengths[i] / strengths[i - 1]), rtol=1e-5,
                                   atol=1e-6)
    assert not torch.equal(middles[1], middles[0])


def test_adaptive_reuse_with_a_tiny_threshold_runs_every_step(control, forwards):
    _sample(control, reuse_threshold=1e-9)
    assert len(forwards) == STEPS


def test_adaptive_reuse_skips_some_steps_at_a_large_threshold(control, forwards):
    _sample(control, reuse_threshold=0.5)
    assert 1 < len(forwards) < STEPS


def test_a_different_cond_uncond_layout_never_reuses_residuals(control, forwards):
    model = comfy_host.run_node("CNR_ApplyControlResiduals", model=_model(), controlnet=control, image=HINT,
                                reuse_every=4)[0]
    wrapper = model.model_options["model_function_wrapper"]
    sigmas = torch.tensor([10.0, 5.0, 2.0, 0.0])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(1))
    for sigma, layout in ((10.0, [0, 1]), (5.0, [1, 0]), (2.0, [0, 1])):
        args = {"input": x, "timestep": torch.full((2,), sigma), "cond_or_uncond": layout,
                "c": {"c_crossattn": context, "transformer_options": {"sample_sigmas": sigmas}}}
        with torch.no_grad():
            wrapper(lambda x, t, **c: x, args)
    assert len(forwards) == 2, "step 1 swaps the rows: computed; step 2 reuses step 0's [cond, uncond]"


def test_both_reuse_rules_at_once_are_refused_naming_the_inputs(control):
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: reuse_every/reuse_threshold"):
        comfy_host.run_node("CNR_ApplyControlResiduals", model=_model(), controlnet=control, image=HINT,
                            reuse_every=2, reuse_threshold=0.1)


def _sampling_model(patcher):
    """What KSampler takes: the ModelPatcher in current ComfyUI, its BaseModel in the 2024 host."""
    return patcher if comfy_host.is_current_host() else patcher.model
