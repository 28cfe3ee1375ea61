"""The shipped workflows: well-formed against the nodes' INPUT_TYPES, and they run in ComfyUI's executor."""
import json

import numpy as np
import pytest
from PIL import Image

import comfy_host
import stand_ins
import workflow_runner
from conftest import REPO_ROOT, skip_where_the_host_lacks
from example_images import INPAINT, hole, write_examples

pytestmark = pytest.mark.comfy

WORKFLOW_FILES = sorted((REPO_ROOT / "workflows").glob("*.json"))
USER_FILE_INPUTS = set(stand_ins.MODEL_FILE_INPUTS) | {"image"}  # lists of the user's own files
# Tiny stand-in models run the graphs as shipped but smaller: attention over a 512 px latent costs
# minutes on a CPU. Inputs are IMAGE_SIZE px; latents and crops GENERATED px; STEPS steps.
IMAGE_SIZE, GENERATED, STEPS = 192, 128, 4


@pytest.fixture(scope="module")
def classes():
    nodes = comfy_host.boot()
    comfy_host.init_builtin_extras(nodes)
    return nodes.NODE_CLASS_MAPPINGS


def test_the_promised_workflows_ship_with_previews():
    names = {p.stem for p in WORKFLOW_FILES}
    assert names == {"controlnet_txt2img", "controlnet_img2img", "controlnet_inpaint", "controlnet_stacked_windows",
                     "union_sdxl_two_types", "t2i_adapter_txt2img", "flux_controlnet_img2img",
                     "qwen_image_controlnet_inpaint", "z_image_fun_controlnet_img2img",
                     "z_image_fun_controlnet_inpaint"}
    for path in WORKFLOW_FILES:
        assert path.with_suffix(".png").is_file(), f"{path.name} has no preview PNG"


def _check_widget(node, name, spec, value):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    where = f"node {node['id']} ({node['type']}) widget {name}"
    choices = spec[0] if isinstance(spec[0], (list, tuple)) else options.get("options") if spec[0] == "COMBO" else None
    if choices is not None:
        if name not in USER_FILE_INPUTS:
            assert value in choices, f"{where}: {value!r} is not one of {choices}"
    elif spec[0] in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert options.get("min", -np.inf) <= value <= options.get("max", np.inf), f"{where}: {value} out of range"
    elif spec[0] == "BOOLEAN":
        assert isinstance(value, bool), where
    else:
        assert isinstance(value, str), where


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_nodes_links_and_widgets_match_input_types(path, classes):
    workflow = json.loads(path.read_text())
    skip_where_the_host_lacks({node["type"] for node in workflow["nodes"]}, classes)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        assert node["type"] in classes, f"unknown node type {node['type']}"
        cls = classes[node["type"]]
        specs = workflow_runner.ordered_inputs(cls)
        widgets = [(n, s) for n, s in specs if workflow_runner.is_widget(s)]
        expected = sum(1 + workflow_runner.extra_widget_values(n, s) for n, s in widgets)
        assert len(node["widgets_values"]) == expected, f"node {node['id']} ({node['type']}) widget count"
        for name, value in workflow_runner.widget_values_by_name(node, cls).items():
            _check_widget(node, name, dict(specs)[name], value)
        required = cls.INPUT_TYPES()["required"]
        linked = {slot["name"] for slot in node["inputs"] if slot["link"] is not None}
        for name, spec in required.items():
            if not workflow_runner.is_widget(spec):
                assert name in linked, f"node {node['id']} ({node['type']}) input {name} is not connected"
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert classes[nodes[src]["type"]].RETURN_TYPES[src_slot] == kind, f"link {link_id} output type"
        target = nodes[dst]["inputs"][dst_slot]
        assert target["link"] == link_id and target["type"] == kind, f"link {link_id} input type"
        assert link_id in nodes[src]["outputs"][src_slot]["links"]


@pytest.fixture(scope="module")
def tiny_comfy(classes, tmp_path_factory):
    import folder_paths
    root = tmp_path_factory.mktemp("workflow_run")
    stand_ins.install_tiny_models([json.loads(p.read_text()) for p in WORKFLOW_FILES], root / "models")
    write_examples(root / "input", IMAGE_SIZE)
    folder_paths.set_input_directory(str(root / "input"))
    folder_paths.set_output_directory(str(root / "output"))
    return root


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_runs_headless_in_comfyui_executor(path, classes, tiny_comfy):
    workflow = json.loads(path.read_text())
    skip_where_the_host_lacks({node["type"] for node in workflow["nodes"]}, classes)
    prompt = workflow_runner.to_api_prompt(workflow, classes)
    outputs = workflow_runner.execute(workflow_runner.shrink(prompt, GENERATED, STEPS))
    saved = [img for out in outputs.values() for img in out.get("images", []) if img["type"] == "output"]
    assert len(saved) == 1
    result = np.asarray(Image.open(tiny_comfy / "output" / saved[0]["subfolder"] / saved[0]["filename"]))
    expected = workflow_runner.output_size(prompt, IMAGE_SIZE, GENERATED)
    assert result.shape == (expected, expected, 3) and result.std() > 0
    if any(node["class_type"] == "CNR_PaddedPaste" for node in prompt.values()):  # the inpaint workflows
        source = np.asarray(Image.open(tiny_comfy / "input" / INPAINT).convert("RGB"))
        outside = np.ones(result.shape[:2], dtype=bool)
        left, top, right, bottom = hole(IMAGE_SIZE)
        outside[top:bottom + 1, left:right + 1] = False
        assert np.array_equal(result[outside], source[outside])
        assert not np.array_equal(result[~outside], source[~outside])
