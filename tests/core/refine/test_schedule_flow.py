"""Flow-matching img2img: executed steps and first sigma equal diffusers' SD3, Flux and Qwen-Image img2img
pipelines."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import (FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, QwenImageImg2ImgPipeline,
                       StableDiffusion3Img2ImgPipeline)
from diffusers.pipelines.flux.pipeline_flux_img2img import calculate_shift

from cnr_pack.controlnet_core.refine.schedule import truncate_schedule
from strength_grid import FLOW_STRENGTHS

STEPS = range(1, 51)


def _sd3():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return scheduler, (lambda n: scheduler.set_timesteps(n)), StableDiffusion3Img2ImgPipeline.get_timesteps


def _flux(image_seq_len):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    mu = calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)

    def set_timesteps(n):
        # What FluxImg2ImgPipeline passes: its own sigmas, shifted by mu for the image size.
        scheduler.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)

    return scheduler, set_timesteps, FluxImg2ImgPipeline.get_timesteps


def _qwen_image(image_seq_len):
    # Qwen/Qwen-Image's scheduler config: exponential shift by the image size, the end stretched to 0.02.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02,
                                                time_shift_type="exponential")
    mu = calculate_shift(image_seq_len, 256, 8192, 0.5, 0.9)

    def set_timesteps(n):
        scheduler.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)

    return scheduler, set_timesteps, QwenImageImg2ImgPipeline.get_timesteps


PIPELINES = {"sd3": _sd3, "flux-256-tokens": lambda: _flux(256), "flux-4096-tokens": lambda: _flux(4096),
             "flux-1024-tokens": lambda: _flux(1024), "qwen-image-1024-tokens": lambda: _qwen_image(1024),
             "qwen-image-4096-tokens": lambda: _qwen_image(4096)}
# diffusers' terminal stretch divides by zero on a one-step schedule (its Qwen-Image sigmas are then NaN).
FIRST_STEP = {"qwen-image-1024-tokens": 2, "qwen-image-4096-tokens": 2}


def _noise_level(scheduler, timesteps):
    """The sigma the pipeline noises the init latent to: scale_noise(0, t, 1) = sigma."""
    return float(scheduler.scale_noise(torch.zeros(1), timesteps[:1], torch.ones(1))[0])


@pytest.mark.parametrize("name", list(PIPELINES))
def test_flow_truncation_equals_diffusers_img2img_steps_and_noise_level(name):
    scheduler, set_timesteps, get_timesteps = PIPELINES[name]()

    def full(n):
        set_timesteps(n)
        return scheduler.sigmas.clone()

    pipe = SimpleNamespace(scheduler=scheduler)
    for steps in STEPS[FIRST_STEP.get(name, 1) - 1:]:
        for strength in FLOW_STRENGTHS:
            ours = truncate_schedule(full, steps, strength, flow_matching=True)
            set_timesteps(steps)
            timesteps, executed = get_timesteps(pipe, steps, strength, "cpu")
            assert ours.executed_steps == executed == len(timesteps), (steps, strength)
            assert len(ours.sigmas) == executed + 1
            if executed:
                assert ours.start_sigma == _noise_level(scheduler, timesteps), (steps, strength)


def test_flow_rule_runs_the_step_the_unet_rule_drops():
    scheduler, set_timesteps, get_timesteps = _sd3()
    set_timesteps(10)
    _, executed = get_timesteps(SimpleNamespace(scheduler=scheduler), 10, 0.33, "cpu")
    full = lambda n: torch.linspace(1.0, 0.0, n + 1)  # noqa: E731
    assert truncate_schedule(full, 10, 0.33, flow_matching=True).executed_steps == executed == 4
    assert truncate_schedule(full, 10, 0.33, "diffusers").executed_steps == 3
