"""The small models trained here (demo_models/, tools/train_demo_models.py) in a real ComfyUI: through the pack's
nodes and ComfyUI's sampler, the trained ControlNet makes the output follow its edge map."""
from functools import lru_cache

import pytest
from safetensors import safe_open

import demo_models
import quality

pytestmark = pytest.mark.comfy


def test_the_committed_demo_weights_are_fp16_and_under_10_mb_in_all():
    files = sorted(demo_models.MODELS_DIR.glob("*.safetensors"))
    assert {f.name for f in files} == {demo_models.CHECKPOINT, demo_models.CONTROLNET}
    assert sum(f.stat().st_size for f in files) <= 10 * 1024 * 1024
    for f in files:
        with safe_open(str(f), "pt") as weights:
            assert {str(weights.get_slice(k).get_dtype()) for k in weights.keys()} == {"F16"}


def test_the_core_reads_the_demo_controlnet_as_an_sd_controlnet_shaped_like_the_demo_unet():
    from cnr_pack.controlnet_core import load_controlnet
    config = load_controlnet(str(demo_models.MODELS_DIR / demo_models.CONTROLNET)).config
    assert config.model_channels == demo_models.UNET_CONFIG["model_channels"]
    assert list(config.channel_mult) == demo_models.UNET_CONFIG["channel_mult"]
    assert list(config.transformer_depth) == demo_models.UNET_CONFIG["transformer_depth"]


# Eight scenes and four sampling seeds: with two scenes and one seed the ratio swung from x0.97 to x1.86 between
# seeds on the same weights.
SCENES, SEEDS = 8, (0, 1, 2, 3)


@lru_cache(maxsize=None)
def edge_f1_by_strength():
    _, edges = quality.control_scenes(SCENES)
    return {strength: sum(quality.edge_f1(edges, quality.generate(edges, strength=strength, steps=8, seed=seed))
                          for seed in SEEDS) / len(SEEDS)
            for strength in (0.0, 1.0)}


def test_the_trained_controlnet_at_strength_1_follows_the_edges_better_than_at_strength_0():
    f1 = edge_f1_by_strength()
    assert f1[1.0] >= 1.15 * f1[0.0], f1


# Issue 20's acceptance figure. Measured with the committed models: 0.119 at strength 0 and 0.318 at strength 1
# (x2.66; per seed x2.36 to x3.69). The first trained ControlNet reached x1.81: its plain epsilon loss all but
# ignored the noisy steps that set the layout (tools/train_demo_models.py, control_loss_weights).
def test_the_trained_controlnet_at_strength_1_follows_the_edges_at_least_twice_as_well_as_at_strength_0():
    f1 = edge_f1_by_strength()
    assert f1[1.0] >= 2 * f1[0.0], f1
