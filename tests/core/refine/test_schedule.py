"""img2img strength truncation equals diffusers' get_timesteps on diffusers' own schedulers."""
from types import SimpleNamespace

import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       StableDiffusionControlNetImg2ImgPipeline)

from cnr_pack.controlnet_core.refine.schedule import diffusers_start_index, truncate_schedule
from strength_grid import SD_BETAS, STRENGTHS



def _sigma_of_timestep(scheduler, t):
    alpha = scheduler.alphas_cumprod[int(t)]
    return float(((1 - alpha) / alpha) ** 0.5)


def _full_sigmas(scheduler):
    """n -> the scheduler's n-step schedule as n + 1 sigmas (last 0)."""
    def schedule(n):
        scheduler.set_timesteps(n)
        if hasattr(scheduler, "sigmas") and len(scheduler.sigmas) == n + 1:
            return scheduler.sigmas.clone().float()
        return torch.tensor([_sigma_of_timestep(scheduler, t) for t in scheduler.timesteps] + [0.0])
    return schedule


SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(**SD_BETAS),
    "euler": lambda: EulerDiscreteScheduler(**SD_BETAS),
    "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**SD_BETAS),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_executed_steps_and_first_sigma_equal_diffusers_get_timesteps(name):
    scheduler = SCHEDULERS[name]()
    pipe = SimpleNamespace(scheduler=scheduler)
    full = _full_sigmas(scheduler)
    for steps in range(1, 51):
        for strength in STRENGTHS:
            scheduler.set_timesteps(steps)
            timesteps, executed = StableDiffusionControlNetImg2ImgPipeline.get_timesteps(pipe, steps, strength, "cpu")
            ours = truncate_schedule(full, steps, strength, "diffusers")
            assert ours.executed_steps == executed == len(timesteps), (steps, strength)
            if executed:
                scheduler.set_timesteps(steps)
                index = int(torch.nonzero(scheduler.timesteps == timesteps[0])[0])
                assert ours.start_sigma == pytest.approx(float(full(steps)[index]), rel=1e-6)


def test_strength_zero_runs_nothing_and_one_runs_everything():
    full = lambda n: torch.linspace(10.0, 0.0, n + 1)  # noqa: E731
    assert truncate_schedule(full, 20, 0.0).executed_steps == 0
    assert truncate_schedule(full, 20, 0.0).sigmas.tolist() == [0.0]
    assert torch.equal(truncate_schedule(full, 20, 1.0).sigmas, full(20))


def test_comfyui_denoise_rule_always_runs_steps_from_a_longer_schedule():
    full = lambda n: torch.linspace(10.0, 0.0, n + 1)  # noqa: E731
    cut = truncate_schedule(full, 20, 0.5, "comfyui_denoise")
    assert cut.executed_steps == 20 and torch.equal(cut.sigmas, full(40)[-21:])


def test_rounding_differs_between_diffusers_and_round_rules():
    assert diffusers_start_index(10, 0.33) == 7  # int(3.3) = 3 steps run
    full = lambda n: torch.linspace(10.0, 0.0, n + 1)  # noqa: E731
    assert truncate_schedule(full, 10, 0.36, "round").executed_steps == 4
    assert truncate_schedule(full, 10, 0.36, "diffusers").executed_steps == 3


def test_a_schedule_longer_than_asked_is_cut_by_its_own_length():
    full = lambda n: torch.linspace(10.0, 0.0, n + 3)  # noqa: E731  (two sigmas more, as ddim_uniform can give)
    whole = truncate_schedule(full, 7, 1.0)
    assert whole.executed_steps == 9 and torch.equal(whole.sigmas, full(7))
    half = truncate_schedule(full, 7, 0.5)
    assert half.executed_steps == 4 and torch.equal(half.sigmas, full(7)[-5:])


def test_denoise_rule_refuses_an_absurd_schedule_without_asking_for_it():
    asked = []
    full = lambda n: asked.append(n) or torch.linspace(10.0, 0.0, n + 1)  # noqa: E731
    with pytest.raises(ValueError, match="20000-step schedule.*at least 0.002"):
        truncate_schedule(full, 20, 0.001, "comfyui_denoise")
    assert asked == []
    assert truncate_schedule(full, 20, 0.002, "comfyui_denoise").executed_steps == 20 and asked == [10000]
