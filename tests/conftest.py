"""Makes the pack importable as ``cnr_pack`` (see ``comfy_host.import_pack``) before any test imports it, and
holds the helpers tests of several modules share."""
import pytest

import comfy_host
from comfy_host import REPO_ROOT, import_pack, is_current_host

__all__ = ["REPO_ROOT", "explicit_softmax_attention", "skip_where_the_host_lacks"]

import_pack()


def skip_where_the_host_lacks(node_types, classes) -> None:
    """The 2024 CI host predates Flux, Qwen-Image and Z-Image (FluxGuidance, ModelSamplingAuraFlow): their
    workflows run on a current ComfyUI only. Anywhere else an unknown node type is a broken workflow."""
    missing = sorted(set(node_types) - set(classes))
    if missing and not is_current_host():
        pytest.skip(f"the CI host's 2024 ComfyUI lacks {', '.join(missing)}: set COMFYUI_PATH to a current ComfyUI")


def explicit_softmax_attention(calls: list):
    """An attention kernel (the core's ``AttentionFn``) written out as softmax(q k^T / sqrt(d)) v, which
    appends each call's query shape to ``calls``."""
    def attend(q, k, v):
        calls.append(q.shape)
        weights = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        return (weights @ v).transpose(1, 2).flatten(2)
    return attend


@pytest.fixture(scope="module")
def nodes():
    """ComfyUI booted on the CPU with the pack (re)loaded, once per test module as each module booted it before:
    its ``nodes`` module (a test module may define its own)."""
    return comfy_host.boot()


@pytest.fixture(scope="session")
def bad_input_env(tmp_path_factory):
    """What every bad-input table shares (``tests/bad_input.py``): a booted ComfyUI, tiny seeded models and a
    controlnet folder the rows write their files into."""
    from bad_input import Env
    return Env(tmp_path_factory.mktemp("bad-input"))
