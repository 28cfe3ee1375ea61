"""CNR_Img2ImgStrength cuts every scheduler's schedule as its rule says, on the host's own schedulers."""
import pytest
import torch

import comfy_host
from bad_input import STRENGTH, _rand

pytestmark = pytest.mark.comfy


def _ksampler_sigmas(model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """ComfyUI's own denoise rule: the sigmas KSampler runs."""
    import comfy.samplers
    # KSampler takes the ModelPatcher from 2024-06 builds on, the bare model before.
    owner = model if hasattr(comfy.samplers, "calculate_sigmas") else model.model
    return comfy.samplers.KSampler(owner, steps, "cpu", "euler", scheduler, denoise).sigmas.cpu()


def _split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> torch.Tensor:
    """ComfyUI's SplitSigmasDenoise (the second output), as the node computes it in hosts that have it."""
    import nodes
    comfy_host.init_builtin_extras(nodes)
    split = nodes.NODE_CLASS_MAPPINGS.get("SplitSigmasDenoise")
    if split is not None:
        return split().get_sigmas(sigmas, denoise)[1]
    steps = len(sigmas) - 1  # the 2024-03 host predates the node; its rule, as its source states it
    return sigmas[-(round(steps * denoise) + 1):]


@pytest.mark.parametrize("rule", ["diffusers (strength)", "round (SplitSigmasDenoise)", "comfyui (denoise)"])
def test_every_scheduler_is_cut_as_its_rule_says_even_with_irregular_lengths(bad_input_env, rule):
    import comfy.samplers
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for steps in (1, 2, 3, 7, 13, 50, 1001):
            full = _ksampler_sigmas(bad_input_env.model, scheduler, steps, 1.0)
            for strength in (0.3, 0.5, 0.999, 1.0):
                inputs = {"model": bad_input_env.model, "scheduler": scheduler, "steps": steps, "strength": strength,
                          "rule": rule}
                if rule == "comfyui (denoise)":
                    expected = _ksampler_sigmas(bad_input_env.model, scheduler, steps, strength)
                elif rule == "round (SplitSigmasDenoise)":
                    expected = _split_sigmas_denoise(full, strength)
                else:  # diffusers' get_timesteps on the schedule the scheduler returned
                    expected = full[len(full) - 1 - int((len(full) - 1) * strength):]
                if not bool(torch.isfinite(expected).all()):
                    with pytest.raises(ValueError, match=f"^{STRENGTH}: scheduler: '{scheduler}'.*non-finite"):
                        comfy_host.run_node(STRENGTH, **inputs)
                    continue
                sigmas, executed, start = comfy_host.run_node(STRENGTH, **inputs)
                assert torch.equal(sigmas, expected), (scheduler, steps, strength)
                assert executed == len(sigmas) - 1 and start == float(sigmas[0])


def test_strength_zero_samples_nothing_with_every_scheduler_and_rule(bad_input_env):
    import comfy.sample
    import comfy.samplers
    latent = _rand(1, 4, 8, 8, seed=5)
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for rule in ("diffusers (strength)", "round (SplitSigmasDenoise)", "comfyui (denoise)"):
            for steps in (1, 7, 20):
                sigmas, executed, _ = comfy_host.run_node(STRENGTH, model=bad_input_env.model, scheduler=scheduler,
                                                          steps=steps, strength=0.0, rule=rule)
                assert executed == 0 and sigmas.tolist() == [0.0], (scheduler, rule, steps)
        env = bad_input_env
        out = comfy.sample.sample_custom(env.model, torch.randn_like(latent), 7.0, comfy_host.sampler("euler"),
                                         sigmas, env.pos, env.neg, latent, disable_pbar=True, seed=0)
        # ComfyUI scales the latent in and out of the model's space around sampling: equal up to rounding.
        assert torch.allclose(out, latent, rtol=1e-6, atol=1e-6), scheduler
