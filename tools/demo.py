"""Run the shipped workflows headless and write their images plus a contact sheet.

By default nothing is downloaded: the SD1.5 ControlNet workflows (txt2img, img2img, inpaint, stacked
windows) run on the small models trained here (``demo_models/``, written by tools/train_demo_models.py)
at their trained size, 128 px, so their outputs follow the control image; every other workflow runs
on tiny seeded random stand-ins, smaller and shorter, whose pixels are noise by design (the sheet
labels each row). Every node, the executor and the samplers are ComfyUI's and the pack's real code.
Point ``--models`` at a ComfyUI models folder holding the files the workflows name to run them
as shipped with real weights.

    python tools/demo.py [--out demo_out] [--models /path/to/ComfyUI/models] [--size 128] [--steps 8]
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_host  # noqa: E402
import demo_models  # noqa: E402
import stand_ins  # noqa: E402
import workflow_runner  # noqa: E402
from example_images import write_examples  # noqa: E402

CELL = 192
COLUMNS = ("input", "control", "mask", "output")
LABEL_WIDTH = 200
DEMO_STEPS = 20
# Control-model names of other families than the SD1.5 ControlNet the demo models include.
OTHER_FAMILIES = ("t2i", "union", "flux", "xl")


def uses_demo_models(workflow: dict) -> bool:
    """An SD1.5 ControlNet workflow (a checkpoint and only SD1.x ControlNets): it runs on the trained models."""
    names = [str(v).lower() for node in workflow["nodes"] for v in node.get("widgets_values") or []
             if node["type"] in ("CheckpointLoaderSimple", "CNR_ControlNetLoader")]
    loaders = {node["type"] for node in workflow["nodes"]}
    return ("CheckpointLoaderSimple" in loaders and "CNR_ControlNetLoader" in loaders
            and not any(word in name for name in names for word in OTHER_FAMILIES))


def control_files(workflow: dict):
    return sorted({node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "CNR_ControlNetLoader"})


def add_previews(prompt: dict) -> dict:
    """Preview the control image and the inpaint mask so the contact sheet can show them."""
    out = dict(prompt)
    for node_id, node in prompt.items():
        if node["class_type"] == "CNR_ApplyControlResiduals":
            out[f"{node_id}_control"] = {"class_type": "PreviewImage", "inputs": {"images": node["inputs"]["image"]}}
        # The SD1.5 inpaint ControlNet takes its mask on the Apply node; latent and Fun inpainting ControlNets
        # through CNR_InpaintControl.
        mask = (node["inputs"].get("inpaint_mask") if node["class_type"] == "CNR_ApplyControlResiduals"
                else node["inputs"].get("mask") if node["class_type"] == "CNR_InpaintControl" else None)
        if mask is not None:
            out[f"{node_id}_mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": mask}}
            out[f"{node_id}_mask"] = {"class_type": "PreviewImage", "inputs": {"images": [f"{node_id}_mask_image", 0]}}
    return out


def image_file(entry: dict) -> Path:
    import folder_paths
    base = folder_paths.get_output_directory() if entry["type"] == "output" else folder_paths.get_temp_directory()
    return Path(base) / entry["subfolder"] / entry["filename"]


def contact_sheet(rows, path: Path) -> None:
    """One row per workflow: its name and what models it ran on, then input, control, mask and output."""
    sheet = Image.new("RGB", (LABEL_WIDTH + CELL * len(COLUMNS), 24 + CELL * len(rows)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(COLUMNS):
        draw.text((LABEL_WIDTH + c * CELL + 6, 6), name, fill=(220, 220, 220))
    for r, (name, cells, label) in enumerate(rows):
        y = 24 + r * CELL
        draw.text((6, y + CELL // 2 - 8), name.replace("controlnet_", ""), fill=(220, 220, 220))
        for i, line in enumerate(label.split("\n")):
            draw.text((6, y + CELL // 2 + 8 + 14 * i), line, fill=(150, 200, 150) if "trained" in label
                      else (200, 150, 150))
        for c, column in enumerate(COLUMNS):
            if cells.get(column):
                picture = Image.open(cells[column]).convert("RGB")
                picture = picture.resize((CELL - 4, CELL - 4), Image.NEAREST) if max(picture.size) < CELL - 4 \
                    else picture
                picture.thumbnail((CELL - 4, CELL - 4))
                sheet.paste(picture, (LABEL_WIDTH + c * CELL + 2, y + 2))
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="where images and the contact sheet go")
    parser.add_argument("--models", help="a ComfyUI models folder with the model files the workflows name "
                                         "(default: tiny seeded stand-ins)")
    parser.add_argument("--size", type=int, default=demo_models.IMAGE_SIZE,
                        help="image size with stand-in models (the trained demo models run at their own size)")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps with stand-in models")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    nodes = comfy_host.boot()
    comfy_host.init_builtin_extras(nodes)
    import folder_paths
    folder_paths.set_output_directory(str(out / "comfy_output"))
    folder_paths.set_input_directory(str(out / "input"))
    paths = sorted((HERE.parent / "workflows").glob("*.json"))
    workflows = {}
    for path in paths:
        workflow = json.loads(path.read_text())
        missing = sorted({node["type"] for node in workflow["nodes"]} - set(nodes.NODE_CLASS_MAPPINGS))
        if missing:
            print(f"skipping {path.stem}: this ComfyUI has no {', '.join(missing)} (the Flux, Qwen-Image and "
                  "Z-Image workflows need a current ComfyUI: set COMFYUI_PATH)", flush=True)
            continue
        workflows[path.stem] = workflow
    real = args.models is not None
    inputs = write_examples(out / "input", 512 if real else args.size)
    if real:
        for kind in sorted(set(stand_ins.MODEL_FILE_INPUTS.values())):
            folder_paths.add_model_folder_path(kind, str(Path(args.models) / kind))
    else:
        stand_ins.install_tiny_models(list(workflows.values()), out / "tiny_models")
        for workflow in workflows.values():
            # The trained ControlNet under every ControlNet name an SD1.5 workflow loads.
            for name in control_files(workflow) if uses_demo_models(workflow) else ():
                shutil.copy(demo_models.MODELS_DIR / demo_models.CONTROLNET, out / "tiny_models" / "controlnet" / name)
        stand_in_loader = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]
        demo_models.use_demo_loaders(nodes)
        demo_loader = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]
    rows = []
    for index, (name, workflow) in enumerate(workflows.items(), 1):
        print(f"[{index}/{len(workflows)}] {name} ...", flush=True)
        start = time.perf_counter()
        trained = not real and uses_demo_models(workflow)
        label = "real weights" if real else "trained demo models" if trained else "random stand-ins\n(noise by design)"
        if trained and len(control_files(workflow)) > 1:
            label += "\n(edge ControlNet in\nevery ControlNet slot)"
        elif trained and "inpaint" in name:
            label += "\n(edge ControlNet in\nthe inpaint slot)"
        if not real:
            nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"] = demo_loader if trained else stand_in_loader
        prompt = add_previews(workflow_runner.to_api_prompt(workflow, nodes.NODE_CLASS_MAPPINGS))
        if trained:
            prompt = workflow_runner.shrink(prompt, demo_models.IMAGE_SIZE, DEMO_STEPS)
        elif not real:
            prompt = workflow_runner.shrink(prompt, args.size // 2 if name == "controlnet_inpaint" else args.size,
                                            args.steps)
        outputs = workflow_runner.execute(prompt)
        cells = {"input": next(p for n, p in inputs.items() if n in json.dumps(workflow))}
        for node_id, ui in outputs.items():
            for entry in ui.get("images", []):
                column = ("mask" if node_id.endswith("_mask") else "control" if node_id.endswith("_control")
                          else "output" if entry["type"] == "output" else None)
                if column:
                    cells[column] = image_file(entry)
        shutil.copy(cells["output"], out / f"{name}.png")
        rows.append((name, cells, label))
        print(f"    done in {time.perf_counter() - start:.1f} s -> {out / (name + '.png')}", flush=True)
    contact_sheet(rows, out / "contact_sheet.png")
    print(f"contact sheet: {out / 'contact_sheet.png'}"
          + ("" if real else " (SD1.5 ControlNet rows: the trained demo models; other rows: random stand-ins, noise "
                             "by design)"))


if __name__ == "__main__":
    main()
