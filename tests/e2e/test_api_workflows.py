"""The API-format workflows (workflows/api/): the UI workflows as /prompt bodies, run headless through a real
ComfyUI server's /prompt endpoint with tools/run_workflow.py, the documented way to run them behind a queue.

The server loads tiny seeded models: ControlNet files written into a temporary models folder (loaded by the
pack's own loader), and ComfyUI's model loaders swapped for tiny stand-ins by a test-only custom node
(tools/tiny_model_loaders).
"""
import json

import comfy_host
import comfy_server
import numpy as np
import pytest
import run_workflow
import stand_ins
import workflow_runner
from conftest import REPO_ROOT, skip_where_the_host_lacks
from example_images import PHOTO, write_examples
from PIL import Image

pytestmark = pytest.mark.comfy

API_FILES = sorted((REPO_ROOT / "workflows" / "api").glob("*.json"))
# As in test_workflows: inputs IMAGE_SIZE px, latents and crops GENERATED px, STEPS steps.
IMAGE_SIZE, GENERATED, STEPS = 192, 128, 4
TIMEOUT = 600.0


def test_every_ui_workflow_ships_in_api_format():
    ui = {p.stem for p in (REPO_ROOT / "workflows").glob("*.json")}
    assert {p.stem for p in API_FILES} == ui


def host_classes():
    nodes = comfy_host.boot()
    comfy_host.init_builtin_extras(nodes)
    return nodes.NODE_CLASS_MAPPINGS


def skip_where_the_host_lacks_its_nodes(prompt, classes) -> None:
    skip_where_the_host_lacks({node["class_type"] for node in prompt.values()}, classes)


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_is_its_ui_workflow_as_a_prompt(path):
    prompt, classes = json.loads(path.read_text()), host_classes()
    skip_where_the_host_lacks_its_nodes(prompt, classes)
    ui = json.loads((REPO_ROOT / "workflows" / path.name).read_text())
    assert prompt == workflow_runner.to_api_prompt(ui, classes)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    stand_ins.write_tiny_model_files(models, stand_ins.model_files(json.loads(p.read_text()) for p in API_FILES))
    stand_in = REPO_ROOT / "tools" / "tiny_model_loaders"
    with comfy_server.running_server(models_dir=models, extra_custom_nodes=[stand_in]) as (url, scratch):
        write_examples(scratch / "input", IMAGE_SIZE)
        yield url, scratch


def saved_image(scratch, entry) -> np.ndarray:
    saved = [image for image in run_workflow.output_images(entry) if image["type"] == "output"]
    assert len(saved) == 1
    return np.asarray(Image.open(scratch / "output" / saved[0]["subfolder"] / saved[0]["filename"]))


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs_through_the_prompt_endpoint(path, server):
    url, scratch = server
    skip_where_the_host_lacks_its_nodes(json.loads(path.read_text()), host_classes())
    prompt = workflow_runner.shrink(json.loads(path.read_text()), GENERATED, STEPS)
    image = saved_image(scratch, run_workflow.run(url, prompt, TIMEOUT))
    expected = workflow_runner.output_size(prompt, IMAGE_SIZE, GENERATED)
    assert image.shape == (expected, expected, 3) and image.std() > 0


def test_a_prompt_gives_the_same_image_after_another_prompt_ran(server):
    """The patched MODEL stays cached between prompts that differ only in the seed: nothing it holds may carry over."""
    url, scratch = server
    prompt = workflow_runner.shrink(json.loads((REPO_ROOT / "workflows" / "api" / "controlnet_stacked_windows.json")
                                               .read_text()), GENERATED, STEPS)
    sampler = next(i for i, node in prompt.items() if node["class_type"] == "KSampler")
    other = json.loads(json.dumps(prompt))
    other[sampler]["inputs"]["seed"] += 1
    first = saved_image(scratch, run_workflow.run(url, prompt, TIMEOUT))
    between = saved_image(scratch, run_workflow.run(url, other, TIMEOUT))
    again = saved_image(scratch, run_workflow.run(url, prompt, TIMEOUT))
    assert not np.array_equal(first, between)
    assert np.array_equal(first, again)


def test_a_refused_prompt_raises_with_the_servers_message(server):
    url, _ = server
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "controlnet_txt2img.json").read_text())
    loader = next(i for i, node in prompt.items() if node["class_type"] == "CNR_ControlNetLoader")
    prompt[loader]["inputs"]["control_net_name"] = "no_such_controlnet.safetensors"
    with pytest.raises(run_workflow.WorkflowError, match="no_such_controlnet"):
        run_workflow.run(url, prompt, TIMEOUT)


def test_the_command_uploads_sets_inputs_runs_and_downloads(server, tmp_path):
    url, scratch = server
    path = REPO_ROOT / "workflows" / "api" / "controlnet_txt2img.json"
    ids = {node["class_type"]: i for i, node in json.loads(path.read_text()).items()}
    photo = write_examples(tmp_path / "mine", 160)[PHOTO].rename(tmp_path / "my_photo.png")
    status = run_workflow.main([str(path), "--server", url, "--upload", str(photo),
                                "--set", f"{ids['LoadImage']}.image=my_photo.png",
                                "--set", f"{ids['EmptyLatentImage']}.width={GENERATED}",
                                "--set", f"{ids['EmptyLatentImage']}.height={GENERATED}",
                                "--set", f"{ids['KSampler']}.steps={STEPS}",
                                "--set", f"{ids['SaveImage']}.filename_prefix=queued/run",
                                "--download", str(tmp_path / "out")])
    assert status == 0
    assert (scratch / "input" / "my_photo.png").read_bytes() == photo.read_bytes()
    downloaded = list((tmp_path / "out").glob("run_*.png"))
    assert len(downloaded) == 1
    assert np.asarray(Image.open(downloaded[0])).shape == (GENERATED, GENERATED, 3)
