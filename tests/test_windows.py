"""Start/end window rules: diffusers' executed-step rule and ComfyUI's sigma rule."""
import pytest

from cnr_pack.controlnet_core.window import active_at_sigma, active_at_step, check_window, step_index


def _diffusers_keep(i, n, start, end):
    # pipeline_controlnet_img2img: keep = 1 - float(i / len(timesteps) < s or (i + 1) / len(timesteps) > e)
    return 1.0 - float(i / n < start or (i + 1) / n > end)


@pytest.mark.parametrize("n", [1, 7, 20, 33])
@pytest.mark.parametrize("start,end", [(0.0, 1.0), (0.0, 0.5), (0.25, 0.75), (0.1, 0.35), (0.5, 1.0)])
def test_executed_step_rule_equals_diffusers(n, start, end):
    assert [active_at_step(i, n, start, end) for i in range(n)] == [bool(_diffusers_keep(i, n, start, end)) for i in range(n)]


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
