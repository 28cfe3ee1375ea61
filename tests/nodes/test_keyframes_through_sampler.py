"""Strength keyframes and per-latent strengths through the real wrapper and ComfyUI's sampler.

Every model call of a real sampling is recorded under the pack's wrapper, then replayed through a MODEL
patched without keyframes: the residuals the UNet received must equal the replayed ones times the strength
ComfyUI-Advanced-ControlNet's rule gives at that step (``tests/acn_keyframes.py``), row by row.
"""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from acn_keyframes import AcnKeyframe, acn_sigma_run, acn_step_run
from cnr_pack.controlnet_core import diffusers_to_original
from cnr_pack.controlnet_core.injection.window import step_index
from tiny_models import tiny_sd15_diffusers

pytestmark = pytest.mark.comfy

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
STEPS = 10
CHAINS = {
    "guarantee outlasts the next start": [AcnKeyframe(0.2, 0.5, guarantee_steps=4), AcnKeyframe(0.3, 0.1)],
    "guarantee 0 skipped, then off": [AcnKeyframe(0.2, 0.5, 0), AcnKeyframe(0.2, 0.7), AcnKeyframe(0.8, 0.0)],
    "a keyframe at 0 guarantees nothing": [AcnKeyframe(0.0, 0.3, 5), AcnKeyframe(0.1, 0.8, 2), AcnKeyframe(0.5, 2.0)],
}
TIMINGS = {"executed_steps": "executed steps (diffusers)", "model_sigma": "model sigma (ComfyUI)"}


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    comfy_host.boot()
    import folder_paths
    folder = tmp_path_factory.mktemp("controlnet_keyframes")
    save_file(diffusers_to_original(tiny_sd15_diffusers(3).state_dict()), str(folder / "kf.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return comfy_host.run_node("CNR_ControlNetLoader", control_net_name="kf.safetensors")[0]


class Recorder:
    """A UNet function wrapper under the pack's: keeps each call's input and the control it receives."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):
        return self  # clones deep-copy model_options on the 2024 host; keep recording here

    def __call__(self, apply_model, args):
        control = args["c"].get("control")
        self.calls.append({"input": args["input"].clone(), "timestep": args["timestep"].clone(),
                           "cond_or_uncond": list(args["cond_or_uncond"]),
                           "c": {k: v for k, v in args["c"].items() if k != "control"},
                           "control": None if control is None else [t.clone() for t in control["output"]]})
        return apply_model(args["input"], args["timestep"], **args["c"])


def _base(denoise, timing):
    """The tiny UNet with a recorder, and the run's schedule (given to the 2024 host, which lacks it)."""
    import comfy.samplers
    model = comfy_host.tiny_unet()
    sigmas = comfy.samplers.KSampler(_sampling_model(model), steps=STEPS, device="cpu", sampler="euler",
                                     scheduler="normal", denoise=denoise).sigmas
    if not comfy_host.is_current_host():
        model.model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    recorder = Recorder()
    model.set_model_unet_function_wrapper(recorder)
    return model, recorder, sigmas.tolist()


def _chain(frames):
    chain = None
    for f in frames:
        chain = comfy_host.run_node("CNR_StrengthKeyframe", start_percent=f.start_percent, strength=f.strength,
                                    guarantee_steps=f.guarantee_steps, inherit_missing=f.inherit_missing,
                                    interpolation="none", prev_keyframes=chain,
                                    latent_strengths=f.latents or "")[0]
    return chain


def _apply(model, control, timing, **extra):
    return comfy_host.run_node("CNR_ApplyControlResiduals", model=model, controlnet=control, image=HINT,
                               strength=0.9, window_timing=TIMINGS[timing], **extra)[0]


def _replayed(plain, call, sigmas):
    """What the MODEL patched without keyframes adds at this recorded call."""
    got = {}

    def apply_model(x, t, **c):
        got["control"] = c.get("control")
        return x

    c = dict(call["c"], transformer_options=dict(call["c"].get("transformer_options", {}),
                                                 sample_sigmas=torch.tensor(sigmas)))
    with torch.no_grad():
        plain.model_options["model_function_wrapper"](apply_model, {"input": call["input"], "c": c,
                                                                    "timestep": call["timestep"],
                                                                    "cond_or_uncond": call["cond_or_uncond"]})
    return got["control"]["output"]


def _check_calls(recorder, plain, sigmas, expected_row_scales):
    assert len(recorder.calls) == STEPS
    for call in recorder.calls:
        step = step_index(float(call["timestep"][0]), sigmas)
        reference = _replayed(plain, call, sigmas)
        scale = expected_row_scales[step].view(-1, 1, 1, 1)
        if not torch.any(scale):
            assert call["control"] is None
            continue
        for got, ref in zip(call["control"], reference):
            if ref is not None:
                torch.testing.assert_close(got, ref * scale, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("timing,denoise", [("executed_steps", 1.0), ("model_sigma", 1.0), ("model_sigma", 0.85)],
                         ids=["executed_steps", "model_sigma", "model_sigma_img2img"])
def test_the_scale_at_every_step_of_a_real_sampling_is_acn_keyframe_strength(control, name, timing, denoise):
    model, recorder, sigmas = _base(denoise, timing)
    comfy_host.sample(_apply(model, control, timing, keyframes=_chain(CHAINS[name])), comfy_host.conditioning(1),
                      comfy_host.conditioning(2), steps=STEPS, denoise=denoise)
    plain = _apply(comfy_host.tiny_unet(), control, timing)
    if timing == "executed_steps":
        strengths = [s for s, _ in acn_step_run(CHAINS[name], STEPS)]
    else:
        percent_to_sigma = model.model.model_sampling.percent_to_sigma
        strengths = [s for s, _ in acn_sigma_run(CHAINS[name], sigmas, percent_to_sigma)]
    assert len(set(strengths)) > 1, "the chain must change the strength during this run"
    _check_calls(recorder, plain, sigmas, [torch.full((2,), s) for s in strengths])


def test_per_latent_strengths_scale_each_latents_cond_and_uncond_rows(control):
    model, recorder, sigmas = _base(1.0, "executed_steps")
    comfy_host.sample(_apply(model, control, "executed_steps", latent_strengths="0:1.0, 2:0.5"),
                      comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS, batch=3)
    plain = _apply(comfy_host.tiny_unet(), control, "executed_steps")
    rows = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.5])  # cond rows of latents 0..2, then uncond rows
    _check_calls(recorder, plain, sigmas, [rows] * STEPS)


def test_keyframe_latent_strengths_are_inherited_and_multiply_the_keyframe_strength(control):
    frames = [AcnKeyframe(0.0, 1.0, latents="1:0.5"), AcnKeyframe(0.5, 0.4)]
    model, recorder, sigmas = _base(1.0, "executed_steps")
    comfy_host.sample(_apply(model, control, "executed_steps", keyframes=_chain(frames)),
                      comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS, batch=2)
    plain = _apply(comfy_host.tiny_unet(), control, "executed_steps")
    expected = [torch.tensor([0.0, 0.5, 0.0, 0.5]) * (1.0 if i < 5 else 0.4) for i in range(STEPS)]
    _check_calls(recorder, plain, sigmas, expected)


def test_a_keyframe_chain_of_strength_one_samples_bit_identically_to_no_keyframes(control):
    plain = comfy_host.sample(_apply(comfy_host.tiny_unet(), control, "executed_steps"), comfy_host.conditioning(1),
                              comfy_host.conditioning(2), steps=STEPS)
    model, _, _ = _base(1.0, "executed_steps")
    keyed = comfy_host.sample(_apply(model, control, "executed_steps", keyframes=_chain([AcnKeyframe(0.5, 1.0)])),
                              comfy_host.conditioning(1), comfy_host.conditioning(2), steps=STEPS)
    assert torch.equal(plain, keyed)


def test_a_bad_latent_strength_string_names_the_node_and_input(control):
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: latent_strengths: '0:x'"):
        _apply(comfy_host.tiny_unet(), control, "executed_steps", latent_strengths="0:x")


def _sampling_model(patcher):
    """What KSampler takes: the ModelPatcher in current ComfyUI, its BaseModel in the 2024 host."""
    return patcher if comfy_host.is_current_host() else patcher.model
