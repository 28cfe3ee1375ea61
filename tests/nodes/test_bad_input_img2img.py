"""Bad input to CNR_Img2ImgStrength (see tests/bad_input.py)."""
import pytest
import torch

from bad_input import (NAN, STRENGTH, case_ids, check_case, refused, safe)

pytestmark = pytest.mark.comfy


def strength_inputs(**overrides):
    return lambda e: {"model": e.model, **overrides}


def runs_nothing(e, out, inputs):
    sigmas, executed, start = out
    assert executed == 0 and len(sigmas) == 1 and start == float(sigmas[0]) == 0.0


def runs_whole_schedule(steps):
    def check(e, out, inputs):
        import comfy.samplers
        full = comfy.samplers.calculate_sigmas_scheduler(e.model.model, inputs["scheduler"], steps) \
            if not hasattr(comfy.samplers, "calculate_sigmas") else \
            comfy.samplers.calculate_sigmas(e.model.get_model_object("model_sampling"), inputs["scheduler"], steps)
        sigmas, executed, _ = out
        assert torch.equal(sigmas, full.cpu()) and executed == len(full) - 1
    return check


def executed_matches_sigmas(e, out, inputs):
    sigmas, executed, start = out
    assert executed == len(sigmas) - 1 and start == float(sigmas[0])


STRENGTH_CASES = [
    refused("strength NaN", STRENGTH, strength_inputs(strength=NAN), "strength", "finite"),
    refused("strength 1.5 over a link", STRENGTH, strength_inputs(strength=1.5), "strength", "0.0..1.0"),
    refused("steps 0 over a link", STRENGTH, strength_inputs(steps=0), "steps"),
    refused("scheduler unknown", STRENGTH, strength_inputs(scheduler="warp"), "scheduler", "normal"),
    refused("rule unknown", STRENGTH, strength_inputs(rule="half"), "rule"),
    refused("comfyui denoise rule at an absurd strength", STRENGTH,
            strength_inputs(steps=10000, strength=0.01, rule="comfyui (denoise)"), "strength", "10000", "diffusers"),
    refused("a noise schedule holding NaN", STRENGTH, lambda e: {"model": e.nan_schedule_model()}, "scheduler",
            "'normal'"),
    safe("ddim_uniform returning more sigmas than steps, strength 1", STRENGTH,
         strength_inputs(scheduler="ddim_uniform", steps=7, strength=1.0), runs_whole_schedule(7)),
    safe("ddim_uniform with more steps than the model has", STRENGTH,
         strength_inputs(scheduler="ddim_uniform", steps=5000, strength=0.5), executed_matches_sigmas),
    safe("ddim_uniform at strength 0", STRENGTH, strength_inputs(scheduler="ddim_uniform", steps=7, strength=0.0),
         runs_nothing),
    safe("karras at 1 step, strength 0", STRENGTH, strength_inputs(scheduler="karras", steps=1, strength=0.0),
         runs_nothing),
    safe("comfyui denoise rule at strength 0", STRENGTH, strength_inputs(strength=0.0, rule="comfyui (denoise)"),
         runs_nothing),
    safe("comfyui denoise rule at its largest schedule", STRENGTH,
         strength_inputs(steps=5, strength=0.0005, rule="comfyui (denoise)"), executed_matches_sigmas),
]


@pytest.mark.parametrize("case", STRENGTH_CASES, ids=case_ids(STRENGTH_CASES))
def test_bad_strength_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
