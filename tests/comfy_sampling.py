"""What the tests that sample through the pack's nodes inside ComfyUI share: calling a node, the relative
difference parity is measured by, tiny ControlNet files in a controlnet folder, a one-frame VAE, a recording
MODEL, and forgetting ComfyUI's loaded-model entries of dropped patchers."""
import gc

from safetensors.torch import save_file


def node_output(nodes, node_id: str, *args, **kwargs):
    """The first output of node ``node_id`` called as its class's FUNCTION with these inputs."""
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    return getattr(cls(), cls.FUNCTION)(*args, **kwargs)[0]


def rel_diff(a, b) -> float:
    """The largest absolute difference of ``a`` from ``b``, relative to ``b``'s largest magnitude."""
    return ((a - b).abs().max() / b.abs().max()).item()


def forget_dropped_models() -> None:
    """Forget loaded-model entries whose patcher (a MODEL clone of an earlier test, or ComfyUI's ControlNet of an
    earlier run) is gone: ComfyUI's own ControlNet reloads every entry around its hint VAE and fails on those.
    Between prompts a running ComfyUI replaces its clones through the executor; tests drop them here."""
    import comfy.model_management as mm
    gc.collect()
    mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not None]


def write_controlnet_folder(tmp_path_factory, folder_name: str, state_dicts: dict) -> None:
    """Each state dict of ``state_dicts`` (file name -> state dict) written as safetensors into a fresh folder
    that ComfyUI then lists as a controlnet folder, where the pack's loader finds it."""
    import folder_paths
    folder = tmp_path_factory.mktemp(folder_name)
    for name, state in state_dicts.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    folder_paths.add_model_folder_path("controlnet", str(folder))


class OneFrameVAE:
    """A 16-channel tiny VAE answering as ComfyUI's Wan-2.1 VAE does for one image: a one-frame latent
    (B, C, 1, h, w), the shape the Wan21 latent format normalises."""

    def __init__(self, vae):
        self._vae = vae

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def encode(self, pixels):
        return self._vae.encode(pixels).unsqueeze(2)


def recording(model, calls: list):
    """``model`` with a UNet function wrapper that appends the control and reference latents the diffusion model
    receives to ``calls``; the Apply node chains its own wrapper in front of it."""
    recorded = model.clone()

    def record(apply_model, args):
        calls.append((args["c"].get("control"), args["c"].get("ref_latents")))
        return apply_model(args["input"], args["timestep"], **args["c"])

    recorded.set_model_unet_function_wrapper(record)
    return recorded
