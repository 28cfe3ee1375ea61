"""Run UI-format workflow files headless in ComfyUI's own executor.

Used by the tests (with tiny seeded stand-in models) and by ``make demo``. The UI format is what users
drag into ComfyUI; the executor takes the API format, so :func:`to_api_prompt` converts the one into
the other with each node's ``INPUT_TYPES`` (widget values in input order, plus the frontend's extra
values: the seed's "control after generate" and the image-upload button).
"""
import asyncio
import inspect
import json
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")  # COMBO: newer nodes' choice lists
MUTED_MODES = (2, 4)  # never / bypass


def is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def extra_widget_values(name: str, spec) -> int:
    """Values the frontend stores after this widget's own: control_after_generate, upload button."""
    options = _options(spec)
    if options.get("control_after_generate") or (spec[0] == "INT" and name in ("seed", "noise_seed")):
        return 1
    if options.get("image_upload"):
        return 1
    return 0


def ordered_inputs(node_class) -> List[Tuple[str, tuple]]:
    types = node_class.INPUT_TYPES()
    return [(n, s) for section in ("required", "optional") for n, s in types.get(section, {}).items()]


def widget_values_by_name(node: dict, node_class) -> Dict[str, object]:
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, spec in ordered_inputs(node_class):
        if not is_widget(spec) or i >= len(values):
            continue
        out[name] = values[i]
        i += 1 + extra_widget_values(name, spec)
    return out


def to_api_prompt(workflow: dict, node_classes: dict) -> dict:
    """UI-format workflow -> API prompt ``{id: {"class_type", "inputs"}}``."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in MUTED_MODES:
            continue
        cls = node_classes[node["type"]]
        inputs = widget_values_by_name(node, cls)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, origin, origin_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


SIZE_WIDGETS = {"EmptyLatentImage": ("width", "height"), "CNR_PaddedCrop": ("width", "height", "long_side")}
STEP_WIDGETS = {"KSampler": ("steps",), "CNR_Img2ImgStrength": ("steps",)}


def shrink(prompt: dict, size: int, steps: int) -> dict:
    """The same prompt at ``size`` px and ``steps`` steps: for quick runs with tiny stand-in models."""
    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name in SIZE_WIDGETS.get(node["class_type"], ()):
            inputs[name] = size
        for name in STEP_WIDGETS.get(node["class_type"], ()):
            inputs[name] = steps
        out[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def output_size(prompt: dict, image_size: int, generated: int) -> int:
    """Side of the image a shrunk prompt saves: the input image's when it refines that image (img2img, paste-back),
    else the generated latent's."""
    refines = any(node["class_type"] in ("VAEEncode", "CNR_PaddedPaste") for node in prompt.values())
    return image_size if refines else generated


def load_workflow(path) -> dict:
    return json.loads(Path(path).read_text())


class _SilentServer:
    """What the executor reports progress to; headless, nobody listens."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


def execute(prompt: dict) -> dict:
    """Validate and run ``prompt`` with ComfyUI's executor; returns the UI outputs per node id.

    Raises:
        RuntimeError: validation failed or a node raised, with ComfyUI's own message.
    """
    import execution
    prompt_id = str(uuid.uuid4())
    if asyncio.iscoroutinefunction(execution.validate_prompt):
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    else:
        valid = execution.validate_prompt(prompt)
    if not valid[0]:
        raise RuntimeError(f"ComfyUI rejected the prompt: {valid[1]} {json.dumps(valid[3], default=str)[:2000]}")
    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        # From late 2025 the executor reads cache_args["ram"] after each node, and main.py always passes them.
        from comfy.cli_args import args
        executor = execution.PromptExecutor(_SilentServer(), cache_args={"lru": args.cache_lru, "ram": args.cache_ram})
    else:
        executor = execution.PromptExecutor(_SilentServer())
    executor.execute(prompt, prompt_id, {}, valid[2])
    if not executor.success:
        errors = [m for m in executor.status_messages if m[0] == "execution_error"]
        raise RuntimeError(f"ComfyUI failed to execute the prompt: {json.dumps(errors, default=str)[:3000]}")
    return {k: v for k, v in getattr(executor, "history_result", {}).get("outputs", {}).items()} \
        if hasattr(executor, "history_result") else executor.outputs_ui
