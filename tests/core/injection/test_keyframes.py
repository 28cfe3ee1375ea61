"""Strength keyframes follow ComfyUI-Advanced-ControlNet's rule at every step, in both window timings."""
import math
import random

import pytest

from acn_keyframes import AcnKeyframe, acn_sigma_run, acn_step_run
from cnr_pack.controlnet_core.injection.keyframes import Keyframe, KeyframeChain, StrengthSchedule
from cnr_pack.controlnet_core.injection.latents import LatentStrengths

LATENTS = {"a": LatentStrengths(((0, 1.0),)), "b": LatentStrengths(((1, 0.5),))}
SIGMAS = [14.6, 9.0, 6.0, 4.2, 3.0, 2.0, 1.3, 0.8, 0.4, 0.1, 0.0]


def _percent_to_sigma(p: float) -> float:
    # ComfyUI's rule shape: p = 0 is above every schedule; log-linear in between.
    if p <= 0.0:
        return 999999999.9
    if p >= 1.0:
        return 0.0
    return math.exp(math.log(14.6) * (1 - p) + math.log(0.03) * p)


def _ours(frames, timing):
    chain = KeyframeChain()
    for f in frames:
        chain = chain.then(Keyframe(f.start_percent, f.strength, f.guarantee_steps, f.inherit_missing,
                                    None if f.latents is None else LATENTS[f.latents]))
    return StrengthSchedule(chain, timing, tuple(_percent_to_sigma(k.start_percent) for k in chain.keyframes))


def _steps(frames, timing, sigmas=SIGMAS):
    names = {id(v): k for k, v in LATENTS.items()}
    return [(s.strength, None if s.latent_strengths is None else names[id(s.latent_strengths)])
            for s in _ours(frames, timing).steps(sigmas)]


CHAINS = {
    "one keyframe halfway": [AcnKeyframe(0.5, 0.2)],
    "guarantee outlasts the next start": [AcnKeyframe(0.2, 0.5, guarantee_steps=4), AcnKeyframe(0.3, 0.1)],
    "guarantee 0 is skipped in the same step": [AcnKeyframe(0.2, 0.5, 0), AcnKeyframe(0.2, 0.7), AcnKeyframe(0.8, 0.0)],
    "a keyframe at 0 guarantees nothing": [AcnKeyframe(0.0, 0.3, 5), AcnKeyframe(0.1, 0.8)],
    "equal starts keep chain order": [AcnKeyframe(0.4, 0.9, 2), AcnKeyframe(0.4, 0.6, 1), AcnKeyframe(0.4, 0.3, 0)],
    "inherited latents": [AcnKeyframe(0.0, 1.0, latents="a"), AcnKeyframe(0.3, 0.5),
                          AcnKeyframe(0.6, 0.7, latents="b")],
    "dropped latents": [AcnKeyframe(0.0, 1.0, latents="a"), AcnKeyframe(0.5, 0.5, inherit_missing=False)],
}


def test_executed_step_timing_matches_hand_worked_chain_with_guarantee():
    strengths = [s for s, _ in _steps(CHAINS["guarantee outlasts the next start"], "executed_steps")]
    assert strengths == [1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1]


def test_a_keyframe_with_guarantee_zero_hands_over_within_the_step_it_starts():
    strengths = [s for s, _ in _steps(CHAINS["guarantee 0 is skipped in the same step"], "executed_steps")]
    assert strengths == [1.0, 1.0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.0, 0.0]


def test_a_keyframe_at_zero_gives_way_at_the_next_start_despite_its_guarantee():
    strengths = [s for s, _ in _steps(CHAINS["a keyframe at 0 guarantees nothing"], "executed_steps")]
    assert strengths == [0.3] + [0.8] * 9


def test_latent_strengths_are_inherited_until_a_keyframe_brings_its_own():
    latents = [name for _, name in _steps(CHAINS["inherited latents"], "executed_steps")]
    assert latents == ["a"] * 6 + ["b"] * 4


def test_inherit_missing_off_drops_the_latent_strengths():
    latents = [name for _, name in _steps(CHAINS["dropped latents"], "executed_steps")]
    assert latents == ["a"] * 5 + [None] * 5


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_executed_step_timing_equals_the_acn_walk(name):
    assert _steps(CHAINS[name], "executed_steps") == acn_step_run(CHAINS[name], len(SIGMAS) - 1)


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("sigmas", [SIGMAS, SIGMAS[4:]], ids=["txt2img", "img2img"])
def test_model_sigma_timing_equals_acn_on_the_schedule(name, sigmas):
    assert _steps(CHAINS[name], "model_sigma", sigmas) == acn_sigma_run(CHAINS[name], sigmas, _percent_to_sigma)


def test_model_sigma_timing_drops_the_guarantee_of_keyframes_starting_above_an_img2img_schedule():
    frames = [AcnKeyframe(0.1, 0.5, guarantee_steps=3), AcnKeyframe(0.2, 0.9)]
    assert [s for s, _ in _steps(frames, "model_sigma", SIGMAS[4:])] == [0.9] * 6


@pytest.mark.parametrize("seed", range(40))
def test_random_chains_equal_acn_in_both_timings(seed):
    rng = random.Random(seed)
    frames = [AcnKeyframe(rng.choice([0.0, 0.1, 0.25, 0.3, 0.5, 0.55, 0.9]), rng.choice([0.0, 0.4, 1.0, 2.0]),
                          rng.choice([0, 1, 2, 4]), rng.random() < 0.5, rng.choice([None, "a", "b"]))
              for _ in range(rng.randint(1, 5))]
    n = rng.randint(1, 25)
    sigmas = [_percent_to_sigma(i / n) if i else 14.6 for i in range(n)] + [0.0]
    assert _steps(frames, "executed_steps", sigmas) == acn_step_run(frames, n)
    assert _steps(frames, "model_sigma", sigmas) == acn_sigma_run(frames, sigmas, _percent_to_sigma)


def test_linear_interpolation_ramps_to_the_next_keyframe_at_the_step_it_starts():
    chain = KeyframeChain().then(Keyframe(0.0, 0.0, interpolation="linear")).then(Keyframe(0.5, 1.0))
    schedule = StrengthSchedule(chain, "executed_steps", (1e9, 1e9, 1.0))
    assert [round(s.strength, 6) for s in schedule.steps(SIGMAS)] == [0.0, 0.2, 0.4, 0.6, 0.8] + [1.0] * 5


def test_intermediate_calls_of_a_step_get_the_step_keyframe():
    schedule = _ours([AcnKeyframe(0.5, 0.2)], "executed_steps")
    assert schedule.at(SIGMAS[4], SIGMAS).strength == 1.0 and schedule.at(2.5, SIGMAS).strength == 1.0
    assert schedule.at(SIGMAS[5], SIGMAS).strength == 0.2


def test_without_the_run_schedule_the_last_keyframe_whose_start_sigma_is_reached_acts():
    schedule = _ours([AcnKeyframe(0.5, 0.2, guarantee_steps=3), AcnKeyframe(0.7, 0.4)], "model_sigma")
    assert [schedule.at(s).strength for s in (10.0, _percent_to_sigma(0.5), _percent_to_sigma(0.7))] == [1.0, 0.2, 0.4]


def test_chaining_leaves_the_earlier_chain_unchanged():
    first = KeyframeChain().then(Keyframe(0.5, 0.2))
    first.then(Keyframe(0.2, 0.1))
    assert [k.strength for k in first.keyframes] == [1.0, 0.2]


@pytest.mark.parametrize("bad", [dict(start_percent=1.5), dict(strength=-1.0), dict(strength=math.nan),
                                 dict(guarantee_steps=-1), dict(interpolation="cubic")])
def test_invalid_keyframes_are_rejected(bad):
    with pytest.raises(ValueError):
        Keyframe(**bad)
