"""Residual reuse for Z-Image Fun ControlNets, whose skips are computed inside ComfyUI's Z-Image forward: off and
k = 1 change nothing, k and the adaptive rule cut the control layers' forwards, a reusing call adds the unweighted
skips the last computing call kept (weighted as the reusing call says), and reuse never crosses a window edge or a
keyframe change; after sampling the wrapper keeps nothing.

ComfyUI's Z-Image arrived after the 2024-03 CI host, so these run only on a current ComfyUI (``COMFYUI_PATH``).
"""
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from tiny_z_image import WIDE, inputs, release_state_dict, tiny_controlnet

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Z-Image needs a current ComfyUI: set COMFYUI_PATH to run the Z-Image reuse tests")]

APPLY = "CNR_ApplyControlResiduals"
LATENT = torch.zeros(1, 16, 8, 12)
IMAGE = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(11))  # 8x the latent
STEPS = 10
RUN = {"steps": STEPS, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}


@pytest.fixture(scope="module")
def control(nodes, transformer, tmp_path_factory):
    """A 2.1 control (refiner skips and control layers after the tiny base's main layers 0..3) with the hint VAE."""
    import folder_paths
    from tiny_sd3 import tiny_sd3_vae
    folder = tmp_path_factory.mktemp("model_patches_reuse")
    weights = release_state_dict("2.1", tiny_controlnet("2.1", transformer))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "zimage-reuse-2.1.safetensors"))
    nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"].INPUT_TYPES()
    folder_paths.add_model_folder_path("model_patches", str(folder))
    loaded = _node(nodes, "CNR_ControlNetLoader", "zimage-reuse-2.1.safetensors")
    control = _node(nodes, "CNR_HintVAE", loaded, tiny_sd3_vae())
    object.__setattr__(control.net, "config", replace(control.net.config, places=(0, 1, 2, 3)))
    return control


@pytest.fixture()
def layer_forwards(control):
    """How many times the control's first control layer and first refiner block run."""
    counts = {"layers": 0, "refiner": 0}

    def counter(name):
        return lambda *_: counts.__setitem__(name, counts[name] + 1)

    net = control.net
    hooks = [net.control_layers[0].register_forward_pre_hook(counter("layers")),
             net.control_noise_refiner[0].register_forward_pre_hook(counter("refiner"))]
    yield counts
    for hook in hooks:
        hook.remove()


def _node(nodes, node_id, *args, **kwargs):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)[0]


def _ours(nodes, model, control, start=0.0, end=1.0, **optional):
    return _node(nodes, APPLY, model, control, IMAGE, 0.8, start, end, "balanced", "crop",
                 "executed steps (diffusers)", **optional)


def _conditioning(seed):
    return [[torch.randn(1, 5, WIDE["cap_feat_dim"], generator=torch.Generator().manual_seed(seed)), {}]]


def _sample(model):
    return comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)


def _recorded(controlled):
    """Sample ``controlled`` and return, per model call the control acts in, its executed step and the control it
    staged."""
    from cnr_pack.controlnet_core.injection.window import step_index
    from cnr_pack.nodes.bindings.binding import STAGED_KEY
    calls = []

    def record(apply_model, args):
        options = args["c"]["transformer_options"]
        sigma = float(args["timestep"].flatten()[0])
        if options.get(STAGED_KEY):
            calls.append((step_index(sigma, options["sample_sigmas"].tolist()), options[STAGED_KEY][0]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    controlled.model_options["model_function_wrapper"].previous = record
    _sample(controlled)
    return calls


def _computing_steps(calls):
    return [step for step, staged in calls if staged.reused is None]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_reuse_off_and_every_step_are_bit_identical(nodes, model, control):
    off = _sample(_ours(nodes, model, control))
    assert torch.equal(_sample(_ours(nodes, model, control, reuse_every=1)), off)
    assert torch.equal(_sample(_ours(nodes, model, control, reuse_every=1, reuse_threshold=0.0)), off)


def test_without_reuse_the_control_layers_run_once_per_step(nodes, model, control, layer_forwards):
    _sample(_ours(nodes, model, control))
    assert layer_forwards == {"layers": STEPS, "refiner": STEPS}


@pytest.mark.parametrize("k,steps", [(2, [0, 2, 4, 6, 8]), (3, [0, 3, 6, 9])])
def test_every_k_runs_the_control_layers_at_every_kth_step(nodes, model, control, layer_forwards, k, steps):
    assert _computing_steps(_recorded(_ours(nodes, model, control, reuse_every=k))) == steps
    assert layer_forwards == {"layers": len(steps), "refiner": len(steps)}


def test_a_reusing_call_adds_the_very_skips_the_last_computing_call_kept(nodes, model, control):
    calls = _recorded(_ours(nodes, model, control, reuse_every=3))
    last_kept = None
    for _, staged in calls:
        if staged.reused is None:
            assert len(staged.keep) == control.net.num_residuals
            last_kept = staged.keep
        else:
            assert staged.keep is None
            assert len(staged.reused) == len(last_kept)
            assert all(a is b for a, b in zip(staged.reused, last_kept))


def test_reuse_every_two_changes_the_result_only_a_little(nodes, model, control):
    full, reused = _sample(_ours(nodes, model, control)), _sample(_ours(nodes, model, control, reuse_every=2))
    plain = _sample(model)
    assert not torch.equal(full, reused)
    assert (reused - full).abs().mean() < 0.5 * (full - plain).abs().mean()


def test_adaptive_reuse_with_a_tiny_threshold_runs_every_step(nodes, model, control, layer_forwards):
    _sample(_ours(nodes, model, control, reuse_threshold=1e-9))
    assert layer_forwards["layers"] == STEPS


def test_adaptive_reuse_skips_some_steps_at_a_large_threshold(nodes, model, control, layer_forwards):
    _sample(_ours(nodes, model, control, reuse_threshold=0.5))
    assert 1 < layer_forwards["layers"] < STEPS


def test_reuse_restarts_at_the_window_start_in_every_sampling(nodes, model, control):
    controlled = _ours(nodes, model, control, start=0.3, end=0.8, reuse_every=3)
    for _ in range(2):
        calls = _recorded(controlled)
        assert [step for step, _ in calls] == [3, 4, 5, 6, 7]
        assert _computing_steps(calls) == [3, 6]


def test_a_keyframe_change_runs_the_control_layers_even_inside_a_reuse_interval(nodes, model, control):
    keyframes = _node(nodes, "CNR_StrengthKeyframe", start_percent=0.5, strength=0.5, guarantee_steps=1,
                      inherit_missing=True, interpolation="none")
    assert _computing_steps(_recorded(_ours(nodes, model, control, reuse_every=3, keyframes=keyframes))) == [0, 3, 5, 8]


def test_after_sampling_the_wrapper_keeps_no_skips_and_the_model_is_left_as_it_was(nodes, model, control):
    dm = model.model.diffusion_model
    attributes, options = set(vars(dm)), repr(model.model_options)
    controlled = _ours(nodes, model, control, reuse_every=2)
    _sample(controlled)
    assert not controlled.model_options["model_function_wrapper"]._computed
    assert set(vars(dm)) == attributes and repr(model.model_options) == options


def _wrapper_calls(nodes, model, control, calls):
    """Call the Apply node's wrapper directly, with a stand-in model call that fills the skips the wrapper asks to
    keep; returns, per call, whether the control was staged to compute."""
    from cnr_pack.nodes.bindings.binding import STAGED_KEY
    wrapper = _ours(nodes, model, control, reuse_every=4).model_options["model_function_wrapper"]
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    computed = []

    def model_call(x, t, **c):
        staged = c["transformer_options"][STAGED_KEY][0]
        computed.append(staged.reused is None)
        if staged.keep is not None:
            staged.keep.extend(torch.zeros(1) for _ in range(control.net.num_residuals))
        return x

    for sigma, layout, batch, caption in calls:
        args = {"input": torch.zeros(batch, 16, 8, 12), "timestep": torch.full((batch,), sigma),
                "cond_or_uncond": layout, "c": {"c_crossattn": torch.zeros(batch, caption, WIDE["cap_feat_dim"]),
                                                "transformer_options": {"sample_sigmas": sigmas}}}
        with torch.no_grad():
            wrapper(model_call, args)
    return computed


def test_a_different_cond_uncond_layout_never_reuses_skips(nodes, model, control):
    calls = [(1.0, [0, 1], 2, 5), (0.75, [1, 0], 2, 5), (0.5, [0, 1], 2, 5)]
    assert _wrapper_calls(nodes, model, control, calls) == [True, True, False]


def test_a_different_batch_or_caption_length_never_reuses_skips(nodes, model, control):
    calls = [(1.0, [0], 1, 5), (0.75, [0], 2, 5), (0.5, [0], 1, 7), (0.25, [0], 1, 5)]
    assert _wrapper_calls(nodes, model, control, calls) == [True, True, True, False]


def _staged(net, context, main_scale=0.7, **reuse):
    from cnr_pack.nodes.bindings.binding import StagedControl
    with torch.no_grad():
        embedding = net.embed_hint(context)
    refiner = net.config.refiner_skips
    scales = (0.7,) * refiner + (main_scale,) * (net.num_residuals - refiner)
    return StagedControl(net=net, embedding=embedding, rows=torch.arange(2), row_scale=torch.tensor([1.0, 0.5]),
                         scales=scales, token_weights=None, attention=None, **reuse)


def _forward(model, staged, x, t, caption):
    from cnr_pack.nodes.bindings.binding import STAGED_KEY
    from cnr_pack.nodes.bindings.z_image import controlled_forward
    with torch.no_grad():
        return controlled_forward(model.model.diffusion_model, x, 1.0 - t, caption, None, {STAGED_KEY: (staged,)})


def test_a_forward_that_keeps_its_skips_returns_what_it_returns_without_keeping(model, control, layer_forwards):
    x, t, caption, context = inputs("2.1")
    kept = []
    computed = _forward(model, _staged(control.net, context, keep=kept), x, t, caption)
    assert torch.equal(computed, _forward(model, _staged(control.net, context), x, t, caption))
    assert len(kept) == control.net.num_residuals and layer_forwards["layers"] == 2


def test_a_reusing_forward_adds_the_kept_skips_without_running_the_control(model, control, layer_forwards):
    x, t, caption, context = inputs("2.1")
    kept = []
    computed = _forward(model, _staged(control.net, context, keep=kept), x, t, caption)
    reused = _forward(model, _staged(control.net, context, reused=tuple(kept)), x, t, caption)
    assert layer_forwards == {"layers": 1, "refiner": 1}, "only the computing call runs the control"
    assert torch.equal(reused, computed)


def test_kept_skips_are_unweighted_so_a_reusing_call_applies_its_own_scales(model, control):
    # The main-stage skips read only the sequence before the main layers: their scales do not change them.
    x, t, caption, context = inputs("2.1")
    kept = []
    _forward(model, _staged(control.net, context, keep=kept), x, t, caption)
    reused = _forward(model, _staged(control.net, context, main_scale=0.2, reused=tuple(kept)), x, t, caption)
    fresh = _forward(model, _staged(control.net, context, main_scale=0.2), x, t, caption)
    assert torch.equal(reused, fresh)


def test_skips_reused_at_a_later_step_act_but_are_not_that_steps_own(model, control):
    x, t, caption, context = inputs("2.1")
    kept = []
    _forward(model, _staged(control.net, context, keep=kept), x, t, caption)
    later = t * 0.5
    with torch.no_grad():
        plain = model.model.diffusion_model(x, 1.0 - later, caption, caption.shape[1])
    reused = _forward(model, _staged(control.net, context, reused=tuple(kept)), x, later, caption)
    fresh = _forward(model, _staged(control.net, context), x, later, caption)
    assert _rel(reused, plain) > 1e-3 and _rel(reused, fresh) > 1e-5
