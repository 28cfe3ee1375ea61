"""Bad input to CNR_StrengthKeyframe (see tests/bad_input.py)."""
import pytest

from bad_input import INF, NAN, case_ids, check_case, refused, safe

pytestmark = pytest.mark.comfy

KEYFRAME = "CNR_StrengthKeyframe"


def keyframe_inputs(**overrides):
    return lambda e: {"start_percent": 0.5, "strength": 0.5, "guarantee_steps": 1, "inherit_missing": True,
                      "interpolation": "none", **overrides}


def chain_of(count):
    def check(e, out, inputs):
        assert len(out[0].keyframes) == count
    return check


KEYFRAME_CASES = [
    refused("strength NaN", KEYFRAME, keyframe_inputs(strength=NAN), "strength", "finite"),
    refused("strength inf", KEYFRAME, keyframe_inputs(strength=INF), "strength", "finite"),
    refused("start_percent beyond 1 over a link", KEYFRAME, keyframe_inputs(start_percent=1.5), "start_percent",
            "0.0..1.0"),
    refused("guarantee_steps negative", KEYFRAME, keyframe_inputs(guarantee_steps=-1), "guarantee_steps"),
    refused("interpolation unknown", KEYFRAME, keyframe_inputs(interpolation="cubic"), "interpolation", "linear"),
    refused("latent_strengths mixed forms", KEYFRAME, keyframe_inputs(latent_strengths="0:1.0, 0.5"),
            "latent_strengths", "do not mix"),
    refused("prev_keyframes of another type", KEYFRAME, keyframe_inputs(prev_keyframes="0.5"), "prev_keyframes",
            "keyframes output"),
    safe("a lone keyframe follows ACN's default one", KEYFRAME, keyframe_inputs(), chain_of(2)),
]


@pytest.mark.parametrize("case", KEYFRAME_CASES, ids=case_ids(KEYFRAME_CASES))
def test_bad_keyframe_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
