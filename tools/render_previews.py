"""Render workflows/<name>.png, each shipped workflow as ComfyUI's own canvas draws it, and
node_previews/<frontend>-<version>/<node>.png, each CNR_ node as each frontend shows it (not committed).

Starts a ComfyUI with this pack on 127.0.0.1 (the CI host, or COMFYUI_PATH), opens it in headless
Chromium, loads each workflow and screenshots the canvas; then screenshots every CNR_ node on every
frontend of tools/frontends.py that can run here (the newest frontend, with Nodes 2.0 off and on, needs
COMFYUI_PATH). Needs Chromium (Debian package) and playwright (test deps). Workflow names given: only
those workflows' pictures (the Flux workflow needs a host with Flux, COMFYUI_PATH).

    python tools/render_previews.py [NAME ...]
"""
import json
import logging
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_server  # noqa: E402
import frontends  # noqa: E402
from example_images import INPAINT, write_examples  # noqa: E402
from stand_ins import model_files  # noqa: E402

SIZE = {"width": 1600, "height": 900}
NODE_PREVIEWS = HERE.parent / "node_previews"
LOG = logging.getLogger("render_previews")
# Values that make a node's extras visible in its picture (a window that starts late and ends early).
# Clear of the menus current frontends float over the top left of the canvas.
NODE_POS = (200, 200)
PREVIEW_VALUES = {"CNR_ApplyControlResiduals": {"start_percent": 0.15, "end_percent": 0.6}}


def render_nodes(p, frontend: frontends.Frontend) -> None:
    """One screenshot per CNR_ node; the crop node after a run, so its preview shows."""
    with comfy_server.running_server(extra_args=frontends.server_args(frontend)) as (url, scratch):
        write_examples(scratch / "input", 256)
        with urllib.request.urlopen(url + "/object_info", timeout=30) as response:
            # The crop runs a prompt; last, so no node drawn after it shows that prompt's outputs by id.
            types = sorted((name for name in json.load(response) if name.startswith("CNR_")),
                           key=lambda name: (name == "CNR_PaddedCrop", name))
        browser = p.chromium.launch(executable_path=comfy_server.chromium_path(), args=comfy_server.CHROMIUM_ARGS)
        page = frontends.open_page(browser, url, frontend, viewport=(1400, 1000))
        out = NODE_PREVIEWS / f"{frontend.name}-{frontends.served_version(page)}"
        out.mkdir(parents=True, exist_ok=True)
        for node_type in types:
            if node_type == "CNR_PaddedCrop":
                node_id = frontends.queue_crop_preview(page, INPAINT, pos=NODE_POS)
                frontends.wait_for_crop_preview(page, frontend, node_id)
            else:
                node_id = frontends.add_node(page, node_type, pos=NODE_POS)
                for name, value in PREVIEW_VALUES.get(node_type, {}).items():
                    frontends.set_widget(page, name, value)
            page.wait_for_timeout(600)
            if frontend.vue_nodes:
                page.locator(f'[data-node-id="{node_id}"]').screenshot(path=str(out / f"{node_type}.png"))
            else:
                box = frontends.canvas_node_box(page)
                clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
                page.screenshot(path=str(out / f"{node_type}.png"), clip=clip)
        LOG.info("%s (frontend %s): %d node previews in %s", frontend.name, frontends.served_version(page),
                 len(types), out)
        browser.close()


def write_placeholder_models(folder: Path, workflows) -> None:
    """An empty file under ``folder/<kind>`` for every model file the workflows name: current frontends outline
    a loader whose file the server does not list, and nothing is loaded to draw the graph."""
    api = [json.loads((path.parent / "api" / path.name).read_text()) for path in workflows]
    for kind, names in model_files(api).items():
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / kind / name).touch()


def render_workflows(p, names=()) -> None:
    workflows = [path for path in sorted((HERE.parent / "workflows").glob("*.json")) if not names or path.stem in names]
    models = Path(tempfile.mkdtemp(prefix="cnr-preview-models-"))
    write_placeholder_models(models, workflows)
    with comfy_server.running_server(models_dir=models) as (url, scratch):
        write_examples(scratch / "input")
        browser = p.chromium.launch(executable_path=comfy_server.chromium_path(), args=comfy_server.CHROMIUM_ARGS)
        page = frontends.open_page(browser, url, frontends.FRONTENDS[0], viewport=(SIZE["width"], SIZE["height"]))
        # Current frontends drop text below a font size on screen and float a minimap, a zoom menu, render
        # statistics and (outside focus mode) menus and a sidebar over the canvas.
        page.evaluate("""async () => {
            const settings = app.extensionManager?.setting;
            if (!settings) return;
            await settings.set("LiteGraph.Canvas.MinFontSizeForLOD", 0);
            await settings.set("Comfy.Minimap.Visible", false);
            await settings.set("Comfy.Graph.CanvasMenu", false);
            await settings.set("Comfy.Graph.CanvasInfo", false);
            await app.extensionManager.command.execute("Workspace.ToggleFocusMode");
        }""")
        page.add_style_tag(content=".comfy-menu, .comfy-settings-btn { display: none !important; }")
        for path in workflows:
            page.evaluate("(w) => { app.loadGraphData(w); }", json.loads(path.read_text()))
            page.evaluate("""() => {
                const nodes = app.graph._nodes;
                const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1]);
                const x2 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
                const y2 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
                const ds = app.canvas.ds;
                const box = app.canvas.canvas.getBoundingClientRect();
                ds.scale = Math.min(1.0, box.width / (x2 - Math.min(...xs) + 80),
                                    box.height / (y2 - Math.min(...ys) + 120));
                ds.offset = [-Math.min(...xs) + 40, -Math.min(...ys) + 60];
                app.graph.setDirtyCanvas(true, true);
            }""")
            page.wait_for_timeout(800)
            page.locator("#graph-canvas").screenshot(path=str(path.with_suffix(".png")))
        browser.close()
    shutil.rmtree(models, ignore_errors=True)


def main(names) -> None:
    from playwright.sync_api import sync_playwright
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with sync_playwright() as p:
        render_workflows(p, names)
        if names:
            return
        for frontend in frontends.FRONTENDS:
            reason = frontends.unavailable(frontend)
            if reason:
                LOG.warning("no node previews for %s: %s", frontend.name, reason)
                continue
            render_nodes(p, frontend)


if __name__ == "__main__":
    main(sys.argv[1:])
