"""Start/end window rules: diffusers' executed-step rule and ComfyUI's sigma rule."""
import pytest

from cnr_pack.controlnet_core.injection.window import (ControlWindow, active_at_sigma, active_at_step, check_window,
                                                      step_index)


def _diffusers_keep(i, n, start, end):
    # pipeline_controlnet_img2img: keep = 1 - float(i / len(timesteps) < s or (i + 1) / len(timesteps) > e)
    return 1.0 - float(i / n < start or (i + 1) / n > end)


@pytest.mark.parametrize("n", [1, 7, 20, 33])
@pytest.mark.parametrize("start,end", [(0.0, 1.0), (0.0, 0.5), (0.25, 0.75), (0.1, 0.35), (0.5, 1.0)])
def test_executed_step_rule_equals_diffusers(n, start, end):
    expected = [bool(_diffusers_keep(i, n, start, end)) for i in range(n)]
    assert [active_at_step(i, n, start, end) for i in range(n)] == expected


def test_twenty_steps_end_half_keeps_the_first_ten():
    assert sum(active_at_step(i, 20, 0.0, 0.5) for i in range(20)) == 10


def test_sigma_rule_is_inclusive_on_both_ends():
    assert active_at_sigma(5.0, 5.0, 1.0) and active_at_sigma(1.0, 5.0, 1.0)
    assert not active_at_sigma(5.01, 5.0, 1.0) and not active_at_sigma(0.99, 5.0, 1.0)


def test_step_index_maps_intermediate_sigmas_to_their_step():
    sigmas = [10.0, 5.0, 2.0, 0.0]
    assert [step_index(s, sigmas) for s in (10.0, 7.0, 5.0, 3.0, 2.0, 0.5)] == [0, 0, 1, 1, 2, 2]
    assert step_index(11.0, sigmas) is None


@pytest.mark.parametrize("start,end", [(0.5, 0.5), (0.7, 0.2), (-0.1, 1.0), (0.0, 1.2)])
def test_invalid_windows_are_rejected(start, end):
    with pytest.raises(ValueError):
        check_window(start, end)


def test_control_window_follows_executed_steps_when_the_schedule_is_known():
    sigmas = [14.6, 8.0, 4.0, 2.0, 1.0, 0.0]
    window = ControlWindow(0.2, 0.6, "executed_steps", sigma_start=100.0, sigma_end=0.0)
    assert [window.active(s, sigmas) for s in sigmas[:-1]] == [active_at_step(i, 5, 0.2, 0.6) for i in range(5)]


def test_control_window_falls_back_to_sigma_bounds_without_a_schedule():
    window = ControlWindow(0.2, 0.6, "executed_steps", sigma_start=8.0, sigma_end=2.0)
    assert window.needs_schedule()
    assert [window.active(s) for s in (14.6, 8.0, 4.0, 2.0, 1.0)] == [False, True, True, True, False]


def test_control_window_in_model_sigma_timing_ignores_the_schedule():
    window = ControlWindow(0.0, 0.5, "model_sigma", sigma_start=20.0, sigma_end=4.0)
    assert not window.needs_schedule()
    assert [window.active(s, [14.6, 8.0, 4.0, 2.0, 0.0]) for s in (14.6, 4.0, 2.0)] == [True, True, False]


def test_full_control_window_is_always_active_without_looking_at_sigmas():
    window = ControlWindow()
    assert window.always and window.active(1e9, None) and window.active(0.0, [1.0, 0.0])


@pytest.mark.parametrize("kwargs", [dict(start=0.7, end=0.2), dict(timing="steps"),
                                    dict(start=0.1, end=0.5, sigma_start=1.0, sigma_end=5.0)])
def test_control_window_refuses_inconsistent_bounds(kwargs):
    with pytest.raises(ValueError):
        ControlWindow(**kwargs)


def test_control_window_is_frozen():
    with pytest.raises(AttributeError):
        ControlWindow().start = 0.5
