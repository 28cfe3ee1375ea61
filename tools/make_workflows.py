"""Write the shipped workflows from compact descriptions: UI format in workflows/ (what users drag into
ComfyUI) and API format in workflows/api/ (the /prompt body, for tools/run_workflow.py and job queues).

Widget values are laid out from each node's INPUT_TYPES in the running ComfyUI (defaults where a
description gives none), so the files match what the frontend itself saves. The Flux, Qwen-Image and Z-Image
workflows need a ComfyUI with those models (``COMFYUI_PATH``); names given write only those workflows.

    python tools/make_workflows.py [NAME ...]
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_host  # noqa: E402
from example_images import INPAINT, PHOTO  # noqa: E402
from workflow_runner import extra_widget_values, is_widget, ordered_inputs, to_api_prompt  # noqa: E402

CKPT = "v1-5-pruned-emaonly.safetensors"
CKPT_SDXL = "sd_xl_base_1.0.safetensors"
POSITIVE = "a cozy wooden cabin on a green hill at sunset, detailed, warm light"
NEGATIVE = "blurry, low quality, deformed"
APPLY = "CNR_ApplyControlResiduals"
INPAINT_POSITIVE = "a wooden cabin door with a small window, warm light"
Z_IMAGE_FUN = "Z-Image-Turbo-Fun-Controlnet-Union-2.1.safetensors"


def qwen_image_common():
    """Nodes 1-6: Qwen-Image's diffusion model (shift 3.1, as ComfyUI's Qwen-Image templates), text encoder, VAE
    and the two prompts (cfg 4: the negative one counts)."""
    return [
        dict(id=1, type="UNETLoader", col=0, row=0, widgets={"unet_name": "qwen_image_fp8_e4m3fn.safetensors"}),
        dict(id=2, type="ModelSamplingAuraFlow", col=1, row=0, widgets={"shift": 3.1}, links={"model": (1, 0)}),
        dict(id=3, type="CLIPLoader", col=0, row=1,
             widgets={"clip_name": "qwen_2.5_vl_7b_fp8_scaled.safetensors", "type": "qwen_image"}),
        dict(id=4, type="VAELoader", col=0, row=2, widgets={"vae_name": "qwen_image_vae.safetensors"}),
        dict(id=5, type="CLIPTextEncode", col=1, row=1, widgets={"text": INPAINT_POSITIVE}, links={"clip": (3, 0)}),
        dict(id=6, type="CLIPTextEncode", col=1, row=2, widgets={"text": NEGATIVE}, links={"clip": (3, 0)}),
    ]


def z_image_common(positive: str):
    """Nodes 1-6: Z-Image Turbo's diffusion model (shift 3), Qwen3-4B text encoder, Flux's VAE and the two
    prompts (cfg 1: the turbo model is distilled, the empty negative prompt is never evaluated)."""
    return [
        dict(id=1, type="UNETLoader", col=0, row=0, widgets={"unet_name": "z_image_turbo_bf16.safetensors"}),
        dict(id=2, type="ModelSamplingAuraFlow", col=1, row=0, widgets={"shift": 3.0}, links={"model": (1, 0)}),
        dict(id=3, type="CLIPLoader", col=0, row=1, widgets={"clip_name": "qwen_3_4b.safetensors", "type": "lumina2"}),
        dict(id=4, type="VAELoader", col=0, row=2, widgets={"vae_name": "ae.safetensors"}),
        dict(id=5, type="CLIPTextEncode", col=1, row=1, widgets={"text": positive}, links={"clip": (3, 0)}),
        dict(id=6, type="CLIPTextEncode", col=1, row=2, widgets={"text": ""}, links={"clip": (3, 0)}),
    ]


def padded_crop(model_id: int):
    """Nodes 7-9: the example image with its mask, cropped at 1024 px on the model's 16 px grid, and the inpaint
    latent, masks and conditioning."""
    return [
        dict(id=7, type="LoadImage", col=0, row=3, widgets={"image": INPAINT}),
        dict(id=8, type="CNR_PaddedCrop", col=1, row=3, widgets={"width": 1024, "height": 1024, "multiple": 16},
             links={"image": (7, 0), "mask": (7, 1), "model": (model_id, 0)}),
        dict(id=9, type="CNR_InpaintMaskPrep", col=2, row=2, widgets={"grow": 4, "feather": 12},
             links={"image": (8, 0), "mask": (8, 1), "vae": (4, 0), "positive": (5, 0), "negative": (6, 0)}),
    ]


def common():
    """Nodes 1-3: checkpoint and the two prompts."""
    return [
        dict(id=1, type="CheckpointLoaderSimple", col=0, row=0, widgets={"ckpt_name": CKPT}),
        dict(id=2, type="CLIPTextEncode", col=1, row=0, widgets={"text": POSITIVE}, links={"clip": (1, 1)}),
        dict(id=3, type="CLIPTextEncode", col=1, row=1, widgets={"text": NEGATIVE}, links={"clip": (1, 1)}),
    ]


def canny_control():
    """Nodes 4-6: the example photo, its Canny edges and a canny ControlNet."""
    return [
        dict(id=4, type="LoadImage", col=0, row=2, widgets={"image": PHOTO}),
        dict(id=5, type="Canny", col=1, row=2, links={"image": (4, 0)}),
        dict(id=6, type="CNR_ControlNetLoader", col=1, row=3,
             widgets={"control_net_name": "control_v11p_sd15_canny.safetensors"}),
    ]


WORKFLOWS = {
    "controlnet_txt2img": common() + canny_control() + [
        dict(id=7, type=APPLY, col=2, row=0, links={"model": (1, 0), "controlnet": (6, 0), "image": (5, 0)}),
        dict(id=8, type="EmptyLatentImage", col=2, row=2, widgets={"width": 512, "height": 512}),
        dict(id=9, type="KSampler", col=3, row=0, widgets={"seed": 42, "steps": 20, "cfg": 7.0},
             links={"model": (7, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (8, 0)}),
        dict(id=10, type="VAEDecode", col=4, row=0, links={"samples": (9, 0), "vae": (1, 2)}),
        dict(id=11, type="SaveImage", col=5, row=0, widgets={"filename_prefix": "cnr_txt2img"},
             links={"images": (10, 0)}),
    ],
    "controlnet_img2img": common() + canny_control() + [
        dict(id=7, type=APPLY, col=2, row=0, widgets={"strength": 0.8},
             links={"model": (1, 0), "controlnet": (6, 0), "image": (5, 0)}),
        dict(id=8, type="VAEEncode", col=2, row=2, links={"pixels": (4, 0), "vae": (1, 2)}),
        dict(id=9, type="CNR_Img2ImgStrength", col=3, row=1, widgets={"steps": 20, "strength": 0.6},
             links={"model": (7, 0)}),
        dict(id=10, type="KSamplerSelect", col=3, row=2, widgets={"sampler_name": "euler"}),
        dict(id=11, type="SamplerCustom", col=4, row=0, widgets={"noise_seed": 42, "cfg": 7.0},
             links={"model": (7, 0), "positive": (2, 0), "negative": (3, 0), "sampler": (10, 0),
                    "sigmas": (9, 0), "latent_image": (8, 0)}),
        dict(id=12, type="VAEDecode", col=5, row=0, links={"samples": (11, 0), "vae": (1, 2)}),
        dict(id=13, type="SaveImage", col=6, row=0, widgets={"filename_prefix": "cnr_img2img"},
             links={"images": (12, 0)}),
    ],
    "controlnet_inpaint": common() + [
        dict(id=4, type="LoadImage", col=0, row=2, widgets={"image": INPAINT}),
        dict(id=5, type="CNR_PaddedCrop", col=1, row=2, links={"image": (4, 0), "mask": (4, 1)}),
        dict(id=6, type="CNR_InpaintMaskPrep", col=2, row=1, widgets={"grow": 4, "feather": 12},
             links={"image": (5, 0), "mask": (5, 1), "vae": (1, 2), "positive": (2, 0), "negative": (3, 0)}),
        dict(id=7, type="CNR_ControlNetLoader", col=2, row=3,
             widgets={"control_net_name": "control_v11p_sd15_inpaint.safetensors"}),
        dict(id=8, type=APPLY, col=3, row=2,
             links={"model": (1, 0), "controlnet": (7, 0), "image": (5, 0), "inpaint_mask": (6, 1)}),
        dict(id=9, type="KSampler", col=4, row=0, widgets={"seed": 42, "steps": 20, "cfg": 7.0},
             links={"model": (8, 0), "positive": (6, 4), "negative": (6, 5), "latent_image": (6, 0)}),
        dict(id=10, type="VAEDecode", col=5, row=0, links={"samples": (9, 0), "vae": (1, 2)}),
        dict(id=11, type="CNR_PaddedPaste", col=6, row=0,
             links={"original": (4, 0), "generated": (10, 0), "crop": (5, 2), "paste_mask": (6, 2)}),
        dict(id=12, type="SaveImage", col=7, row=0, widgets={"filename_prefix": "cnr_inpaint"},
             links={"images": (11, 0)}),
    ],
    "union_sdxl_two_types": [
        dict(id=1, type="CheckpointLoaderSimple", col=0, row=0, widgets={"ckpt_name": CKPT_SDXL}),
        dict(id=2, type="CLIPTextEncode", col=1, row=0, widgets={"text": POSITIVE}, links={"clip": (1, 1)}),
        dict(id=3, type="CLIPTextEncode", col=1, row=1, widgets={"text": NEGATIVE}, links={"clip": (1, 1)}),
        dict(id=4, type="LoadImage", col=0, row=2, widgets={"image": PHOTO}),
        dict(id=5, type="Canny", col=1, row=2, links={"image": (4, 0)}),
        dict(id=6, type="CNR_ControlNetLoader", col=1, row=3,
             widgets={"control_net_name": "controlnet-union-sdxl-1.0-promax.safetensors"}),
        # Canny edges and the photo itself as the tile hint, both in one ControlNet pass.
        dict(id=7, type="CNR_UnionType", col=2, row=2,
             widgets={"type": "canny/lineart/anime_lineart/mlsd", "type_2": "tile"},
             links={"controlnet": (6, 0), "image_2": (4, 0)}),
        dict(id=8, type=APPLY, col=3, row=0, widgets={"strength": 0.8},
             links={"model": (1, 0), "controlnet": (7, 0), "image": (5, 0)}),
        dict(id=9, type="EmptyLatentImage", col=3, row=2, widgets={"width": 1024, "height": 1024}),
        dict(id=10, type="KSampler", col=4, row=0, widgets={"seed": 42, "steps": 25, "cfg": 6.0},
             links={"model": (8, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (9, 0)}),
        dict(id=11, type="VAEDecode", col=5, row=0, links={"samples": (10, 0), "vae": (1, 2)}),
        dict(id=12, type="SaveImage", col=6, row=0, widgets={"filename_prefix": "cnr_union_sdxl"},
             links={"images": (11, 0)}),
    ],
    "t2i_adapter_txt2img": common() + [
        dict(id=4, type="LoadImage", col=0, row=2, widgets={"image": PHOTO}),
        dict(id=5, type="Canny", col=1, row=2, links={"image": (4, 0)}),
        dict(id=6, type="CNR_ControlNetLoader", col=1, row=3,
             widgets={"control_net_name": "t2iadapter_canny_sd15v2.safetensors"}),
        dict(id=7, type=APPLY, col=2, row=0, widgets={"strength": 0.9},
             links={"model": (1, 0), "controlnet": (6, 0), "image": (5, 0)}),
        dict(id=8, type="EmptyLatentImage", col=2, row=2, widgets={"width": 512, "height": 512}),
        dict(id=9, type="KSampler", col=3, row=0, widgets={"seed": 42, "steps": 20, "cfg": 7.0},
             links={"model": (7, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (8, 0)}),
        dict(id=10, type="VAEDecode", col=4, row=0, links={"samples": (9, 0), "vae": (1, 2)}),
        dict(id=11, type="SaveImage", col=5, row=0, widgets={"filename_prefix": "cnr_t2i_adapter"},
             links={"images": (10, 0)}),
    ],
    # Flux dev: diffusion model, text encoders and VAE in separate files; cfg 1 (guidance distilled, so the
    # empty negative prompt is never evaluated); a union ControlNet that takes its hint as a VAE latent.
    "flux_controlnet_img2img": [
        dict(id=1, type="UNETLoader", col=0, row=0, widgets={"unet_name": "flux1-dev.safetensors"}),
        dict(id=2, type="DualCLIPLoader", col=0, row=1,
             widgets={"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}),
        dict(id=3, type="VAELoader", col=0, row=2, widgets={"vae_name": "ae.safetensors"}),
        dict(id=4, type="CLIPTextEncode", col=1, row=0, widgets={"text": POSITIVE}, links={"clip": (2, 0)}),
        dict(id=5, type="FluxGuidance", col=2, row=0, widgets={"guidance": 3.5}, links={"conditioning": (4, 0)}),
        dict(id=6, type="CLIPTextEncode", col=1, row=1, widgets={"text": ""}, links={"clip": (2, 0)}),
        dict(id=7, type="LoadImage", col=0, row=3, widgets={"image": PHOTO}),
        dict(id=8, type="Canny", col=1, row=3, links={"image": (7, 0)}),
        dict(id=9, type="CNR_ControlNetLoader", col=1, row=2,
             widgets={"control_net_name": "FLUX.1-dev-Controlnet-Union.safetensors"}),
        dict(id=10, type="CNR_HintVAE", col=2, row=2, links={"controlnet": (9, 0), "vae": (3, 0)}),
        dict(id=11, type="CNR_FluxUnionMode", col=2, row=3, widgets={"mode": "canny"},
             links={"controlnet": (10, 0)}),
        dict(id=12, type=APPLY, col=3, row=0, widgets={"strength": 0.6},
             links={"model": (1, 0), "controlnet": (11, 0), "image": (8, 0)}),
        dict(id=13, type="VAEEncode", col=2, row=1, links={"pixels": (7, 0), "vae": (3, 0)}),
        dict(id=14, type="CNR_Img2ImgStrength", col=3, row=2,
             widgets={"scheduler": "simple", "steps": 28, "strength": 0.75}, links={"model": (12, 0)}),
        dict(id=15, type="KSamplerSelect", col=3, row=3, widgets={"sampler_name": "euler"}),
        dict(id=16, type="SamplerCustom", col=4, row=0, widgets={"noise_seed": 42, "cfg": 1.0},
             links={"model": (12, 0), "positive": (5, 0), "negative": (6, 0), "sampler": (15, 0),
                    "sigmas": (14, 0), "latent_image": (13, 0)}),
        dict(id=17, type="VAEDecode", col=4, row=2, links={"samples": (16, 0), "vae": (3, 0)}),
        dict(id=18, type="SaveImage", col=5, row=0, widgets={"filename_prefix": "cnr_flux_img2img"},
             links={"images": (17, 0)}),
    ],
    # Qwen-Image with InstantX's inpainting ControlNet (the crop, its VAE latent and the mask as the hint), in a
    # 1024 px crop snapped to the MODEL's 16 px grid, pasted back.
    "qwen_image_controlnet_inpaint": qwen_image_common() + padded_crop(2) + [
        dict(id=10, type="CNR_ControlNetLoader", col=2, row=0,
             widgets={"control_net_name": "Qwen-Image-InstantX-ControlNet-Inpainting.safetensors"}),
        dict(id=11, type="CNR_HintVAE", col=2, row=1, links={"controlnet": (10, 0), "vae": (4, 0)}),
        dict(id=12, type="CNR_InpaintControl", col=3, row=1, links={"controlnet": (11, 0), "mask": (8, 1)}),
        dict(id=13, type=APPLY, col=3, row=2, links={"model": (2, 0), "controlnet": (12, 0), "image": (8, 0)}),
        dict(id=14, type="KSampler", col=4, row=0,
             widgets={"seed": 42, "steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple"},
             links={"model": (13, 0), "positive": (9, 4), "negative": (9, 5), "latent_image": (9, 0)}),
        dict(id=15, type="VAEDecode", col=5, row=0, links={"samples": (14, 0), "vae": (4, 0)}),
        dict(id=16, type="CNR_PaddedPaste", col=5, row=1,
             links={"original": (7, 0), "generated": (15, 0), "crop": (8, 2), "paste_mask": (9, 2)}),
        dict(id=17, type="SaveImage", col=6, row=0, widgets={"filename_prefix": "cnr_qwen_image_inpaint"},
             links={"images": (16, 0)}),
    ],
    # Z-Image Turbo with the Fun ControlNet Union 2.1 (canny edges as a VAE latent), img2img at strength 0.8 over
    # 8 steps, cfg 1.
    "z_image_fun_controlnet_img2img": z_image_common(POSITIVE) + [
        dict(id=7, type="LoadImage", col=0, row=3, widgets={"image": PHOTO}),
        dict(id=8, type="Canny", col=1, row=3, links={"image": (7, 0)}),
        dict(id=9, type="CNR_ControlNetLoader", col=2, row=0, widgets={"control_net_name": Z_IMAGE_FUN}),
        dict(id=10, type="CNR_HintVAE", col=2, row=1, links={"controlnet": (9, 0), "vae": (4, 0)}),
        dict(id=11, type=APPLY, col=3, row=0, widgets={"strength": 0.75},
             links={"model": (2, 0), "controlnet": (10, 0), "image": (8, 0)}),
        dict(id=12, type="VAEEncode", col=2, row=2, links={"pixels": (7, 0), "vae": (4, 0)}),
        dict(id=13, type="CNR_Img2ImgStrength", col=3, row=2,
             widgets={"scheduler": "simple", "steps": 8, "strength": 0.8}, links={"model": (11, 0)}),
        dict(id=14, type="KSamplerSelect", col=3, row=3, widgets={"sampler_name": "euler"}),
        dict(id=15, type="SamplerCustom", col=4, row=0, widgets={"noise_seed": 42, "cfg": 1.0},
             links={"model": (11, 0), "positive": (5, 0), "negative": (6, 0), "sampler": (14, 0),
                    "sigmas": (13, 0), "latent_image": (12, 0)}),
        dict(id=16, type="VAEDecode", col=4, row=2, links={"samples": (15, 0), "vae": (4, 0)}),
        dict(id=17, type="SaveImage", col=5, row=0, widgets={"filename_prefix": "cnr_z_image_img2img"},
             links={"images": (16, 0)}),
    ],
    # Z-Image Turbo inpainting with the same Fun 2.1 ControlNet: the crop's canny edges are the control image, the
    # crop itself (its masked part blanked) and the mask complete the hint; 8 steps, cfg 1, pasted back.
    "z_image_fun_controlnet_inpaint": z_image_common(INPAINT_POSITIVE) + padded_crop(2) + [
        dict(id=10, type="Canny", col=3, row=0, links={"image": (8, 0)}),
        dict(id=11, type="CNR_ControlNetLoader", col=2, row=0, widgets={"control_net_name": Z_IMAGE_FUN}),
        dict(id=12, type="CNR_HintVAE", col=2, row=1, links={"controlnet": (11, 0), "vae": (4, 0)}),
        dict(id=13, type="CNR_InpaintControl", col=3, row=1,
             links={"controlnet": (12, 0), "mask": (8, 1), "inpaint_image": (8, 0)}),
        dict(id=14, type=APPLY, col=3, row=2, widgets={"strength": 0.75},
             links={"model": (2, 0), "controlnet": (13, 0), "image": (10, 0)}),
        dict(id=15, type="KSampler", col=4, row=0,
             widgets={"seed": 42, "steps": 8, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple"},
             links={"model": (14, 0), "positive": (9, 4), "negative": (9, 5), "latent_image": (9, 0)}),
        dict(id=16, type="VAEDecode", col=5, row=0, links={"samples": (15, 0), "vae": (4, 0)}),
        dict(id=17, type="CNR_PaddedPaste", col=5, row=1,
             links={"original": (7, 0), "generated": (16, 0), "crop": (8, 2), "paste_mask": (9, 2)}),
        dict(id=18, type="SaveImage", col=6, row=0, widgets={"filename_prefix": "cnr_z_image_inpaint"},
             links={"images": (17, 0)}),
    ],
    "controlnet_stacked_windows": common() + canny_control() + [
        dict(id=7, type="CNR_ControlNetLoader", col=1, row=4,
             widgets={"control_net_name": "control_v11f1p_sd15_depth.safetensors"}),
        dict(id=8, type=APPLY, col=2, row=0, widgets={"end_percent": 0.6},
             links={"model": (1, 0), "controlnet": (6, 0), "image": (5, 0)}),
        dict(id=9, type=APPLY, col=3, row=0, widgets={"strength": 0.7, "start_percent": 0.3},
             links={"model": (8, 0), "controlnet": (7, 0), "image": (4, 0)}),
        dict(id=10, type="EmptyLatentImage", col=3, row=2, widgets={"width": 512, "height": 512}),
        dict(id=11, type="KSampler", col=4, row=0, widgets={"seed": 42, "steps": 20, "cfg": 7.0},
             links={"model": (9, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (10, 0)}),
        dict(id=12, type="VAEDecode", col=5, row=0, links={"samples": (11, 0), "vae": (1, 2)}),
        dict(id=13, type="SaveImage", col=6, row=0, widgets={"filename_prefix": "cnr_stacked"},
             links={"images": (12, 0)}),
    ],
}


def default_value(name, spec):
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], (list, tuple)):
        return spec[0][0] if spec[0] else ""
    if spec[0] == "COMBO":
        return (options.get("options") or [""])[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec[0]]


def build(description, classes) -> dict:
    links, nodes_out = [], []
    by_id = {d["id"]: d for d in description}
    outputs = {d["id"]: [[] for _ in classes[d["type"]].RETURN_TYPES] for d in description}
    for d in description:
        for name, (src, slot) in d.get("links", {}).items():
            link_id = len(links) + 1
            kind = classes[by_id[src]["type"]].RETURN_TYPES[slot]
            links.append([link_id, src, slot, d["id"], name, kind])
            outputs[src][slot].append(link_id)
    for order, d in enumerate(description):
        cls = classes[d["type"]]
        inputs, values = [], []
        for name, spec in ordered_inputs(cls):
            if is_widget(spec):
                values.append(d.get("widgets", {}).get(name, default_value(name, spec)))
                if extra_widget_values(name, spec):
                    values.append("image" if (spec[1] or {}).get("image_upload") else "fixed")
                continue
            link = next((lk for lk in links if lk[3] == d["id"] and lk[4] == name), None)
            inputs.append({"name": name, "type": spec[0], "link": None if link is None else link[0]})
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        nodes_out.append({
            "id": d["id"], "type": d["type"], "pos": [40 + 360 * d["col"], 40 + 260 * d["row"]],
            "size": [320, 220], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": outputs[d["id"]][i], "slot_index": i}
                        for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))],
            "properties": {"Node name for S&R": d["type"]},
            "widgets_values": values,
        })
    # The UI format stores the target slot index, not the input name.
    for link in links:
        target = next(n for n in nodes_out if n["id"] == link[3])
        link[4] = next(i for i, slot in enumerate(target["inputs"]) if slot["name"] == link[4])
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes_out, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main(names) -> None:
    nodes = comfy_host.boot()
    comfy_host.init_builtin_extras(nodes)
    out_dir = HERE.parent / "workflows"
    (out_dir / "api").mkdir(parents=True, exist_ok=True)
    for name, description in WORKFLOWS.items():
        if names and name not in names:
            continue
        workflow = build(description, nodes.NODE_CLASS_MAPPINGS)
        (out_dir / f"{name}.json").write_text(json.dumps(workflow, indent=2) + "\n")
        prompt = to_api_prompt(workflow, nodes.NODE_CLASS_MAPPINGS)
        (out_dir / "api" / f"{name}.json").write_text(json.dumps(prompt, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
