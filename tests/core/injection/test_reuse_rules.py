"""When a step may reuse the last residuals: every k-th step, the adaptive input-change rule, and the edges."""
import pytest
import torch

from cnr_pack.controlnet_core.injection.reuse import ComputedResiduals, ResidualReuse, relative_change, should_compute

X = torch.ones(2, 4, 8, 8)


def _last(step=0, keyframe=0, x=X, timestep=500.0):
    return ComputedResiduals(step, keyframe, x, timestep, None)


def test_reuse_is_off_by_default():
    assert should_compute(ResidualReuse(), _last(), 1, 0, X, 500.0)


def test_every_second_step_reuses_the_step_after_a_computation():
    policy = ResidualReuse(every=2)
    assert [should_compute(policy, _last(step=4), s, 0, X, 500.0) for s in (4, 5, 6)] == [False, False, True]


def test_every_third_step_computes_three_steps_after():
    policy = ResidualReuse(every=3)
    assert [should_compute(policy, _last(step=0), s, 0, X, 500.0) for s in (1, 2, 3)] == [False, False, True]


def test_a_keyframe_change_forces_a_computation():
    assert should_compute(ResidualReuse(every=4), _last(keyframe=0), 1, 1, X, 500.0)


def test_an_earlier_step_means_a_new_run_and_forces_a_computation():
    assert should_compute(ResidualReuse(every=4), _last(step=5), 0, 0, X, 500.0)


def test_nothing_computed_yet_forces_a_computation():
    assert should_compute(ResidualReuse(every=4), None, 3, 0, X, 500.0)


def test_adaptive_rule_reuses_below_the_threshold_and_computes_above():
    policy = ResidualReuse(threshold=0.1)
    assert not should_compute(policy, _last(), 1, 0, X * 1.05, 500.0)
    assert should_compute(policy, _last(), 1, 0, X * 1.2, 500.0)


def test_adaptive_rule_counts_the_timestep_change():
    policy = ResidualReuse(threshold=0.1)
    assert not should_compute(policy, _last(timestep=500.0), 1, 0, X, 480.0)
    assert should_compute(policy, _last(timestep=500.0), 1, 0, X, 400.0)


def test_relative_change_is_the_mean_absolute_change_over_the_mean_magnitude():
    assert relative_change(torch.tensor([1.0, -3.0]), torch.tensor([2.0, -2.0])) == pytest.approx(0.5)


def test_both_rules_at_once_are_refused():
    with pytest.raises(ValueError):
        ResidualReuse(every=2, threshold=0.1)
