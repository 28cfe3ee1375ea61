"""The ComfyUI frontends the browser tests and previews drive, and a Chromium page on one of them.

Three frontends, each served by a real ComfyUI on 127.0.0.1:

- ``host``: the host's own frontend. The CI host (2024-03) serves its legacy LiteGraph ``web/``;
  a current host (``COMFYUI_PATH``) serves the frontend at ``HOST_FRONTEND_ROOT`` when set (``make
  test``: the one the 0.3.75 host pins, installed beside it), else the ``comfyui-frontend-package``
  of its environment.
- ``newest`` and ``newest-vue``: the pinned ``comfyui-frontend-package`` (tests/requirements.txt),
  served by a current host through ``--front-end-root``, with Nodes 2.0 (the Vue renderer) off and on.

Where the newest frontend comes from: ``NEWEST_FRONTEND_ROOT`` (its ``static`` folder, or a folder
that ``pip install --target`` filled), else the installed ``comfyui_frontend_package`` when it is the
pinned version. A current host's own environment usually pins an older one, hence the variable.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from comfy_host import REPO_ROOT, is_current_host
from comfy_server import host_supports

PACKAGE = "comfyui-frontend-package"
ENV_VAR = "NEWEST_FRONTEND_ROOT"
HOST_ENV_VAR = "HOST_FRONTEND_ROOT"


@dataclass(frozen=True)
class Frontend:
    name: str
    newest: bool
    vue_nodes: bool


FRONTENDS = (Frontend("host", newest=False, vue_nodes=False), Frontend("newest", newest=True, vue_nodes=False),
             Frontend("newest-vue", newest=True, vue_nodes=True))


def pinned_version() -> str:
    text = (REPO_ROOT / "tests" / "requirements.txt").read_text()
    match = re.search(rf"^{PACKAGE}==(\S+)", text, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError(f"tests/requirements.txt does not pin {PACKAGE}")
    return match.group(1)


def _static_dir(folder: Path) -> Path | None:
    for candidate in (folder, folder / "comfyui_frontend_package" / "static"):
        if (candidate / "index.html").is_file():
            return candidate
    return None


def _static_dir_of(variable: str) -> Path:
    """The frontend ``static`` folder the environment variable ``variable`` names; raises when it holds none."""
    found = _static_dir(Path(os.environ[variable]))
    if found is None:
        raise RuntimeError(f"{variable}={os.environ[variable]} holds no index.html (nor comfyui_frontend_package/"
                           "static/index.html)")
    return found


def newest_static_dir() -> Path | None:
    """The pinned newest frontend's ``static`` folder, or None when it cannot be found (see module doc)."""
    if os.environ.get(ENV_VAR):
        return _static_dir_of(ENV_VAR)
    try:
        installed = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    if installed != pinned_version():
        return None
    package = Path(importlib.util.find_spec("comfyui_frontend_package").submodule_search_locations[0])
    return _static_dir(package / "static")


def unavailable(frontend: Frontend) -> str | None:
    """Why ``frontend`` cannot run here (a skip message), or None when it can."""
    if not frontend.newest:
        return None
    if not is_current_host():
        return ("the newest frontend needs a current ComfyUI host (--front-end-root): set COMFYUI_PATH "
                "(the CI host only serves its legacy frontend)")
    if newest_static_dir() is None:
        return (f"{PACKAGE}=={pinned_version()} not found: install it in this environment or run "
                f"`pip install --no-deps --target DIR {PACKAGE}=={pinned_version()}` and set {ENV_VAR}=DIR")
    return None


def server_args(frontend: Frontend) -> list:
    """``main.py`` arguments that serve ``frontend``."""
    if frontend.newest:
        return ["--front-end-root", str(newest_static_dir())]
    if os.environ.get(HOST_ENV_VAR) and is_current_host():
        return ["--front-end-root", str(_static_dir_of(HOST_ENV_VAR))]
    return []


def write_settings(url: str, frontend: Frontend) -> None:
    """Settings the page reads on load: Nodes 2.0 on or off, and no first-run template browser."""
    if not host_supports("--user-directory"):
        return  # the 2024 host keeps settings inside its own folder, and its frontend has neither setting
    body = json.dumps({"Comfy.VueNodes.Enabled": frontend.vue_nodes, "Comfy.TutorialCompleted": True}).encode()
    request = urllib.request.Request(url + "/settings", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"POST /settings answered {response.status}")


def open_page(browser, url: str, frontend: Frontend, viewport=(1400, 900)):
    """A page on ``url`` once the app is up; ``page.cnr_errors`` collects console errors and page errors."""
    write_settings(url, frontend)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors = []
    # Chromium asks every site for /favicon.ico, which ComfyUI does not serve: not ours to fix.
    page.on("console", lambda m: errors.append(f"{m.text} @ {m.location.get('url')}")
            if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico") else None)
    page.on("pageerror", lambda e: errors.append(f"{e} @ {e.stack}"))
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=60000)
    page.cnr_errors = errors
    return page


def served_version(page) -> str:
    """The frontend version the page reports ("legacy" for the 2024 frontend, which reports none)."""
    return page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || 'legacy'")


def vue_nodes_active(page) -> bool:
    return page.evaluate("() => !!document.querySelector('[data-node-id]') || "
                         "!!window.app.extensionManager?.setting?.get?.('Comfy.VueNodes.Enabled')")


def add_node(page, node_type: str, pos=(60, 60)):
    """Clears the graph and adds one node at ``pos`` with the view at scale 1; ``window.cnrNode`` is it.

    Returns the node id.
    """
    return page.evaluate("""([type, pos]) => {
        app.graph.clear();
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        app.graph.add(node);
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [0, 0];
        app.graph.setDirtyCanvas(true, true);
        window.cnrNode = node;
        return node.id;
    }""", [node_type, list(pos)])


def set_widget(page, name: str, value):
    """Sets a widget of ``window.cnrNode`` as the frontend does after an edit (value, then its callback).

    Returns the names of the widgets the extension hides.
    """
    return page.evaluate("""([name, value]) => {
        const w = window.cnrNode.widgets.find(w => w.name === name);
        w.value = value;
        w.callback && w.callback(value);
        app.graph.setDirtyCanvas(true, true);
        return window.cnrNode.cnrRefresh().hidden;
    }""", [name, value])


def queue_crop_preview(page, image: str, pos=(380, 60)):
    """Clears the graph, queues LoadImage(image) -> CNR_PaddedCrop -> PreviewImage; ``window.cnrNode`` is the crop,
    at ``pos``, the others left and right of it.

    Returns the crop node's id. ``image`` must be in the server's input folder before the page loaded.
    """
    return page.evaluate("""([image, pos]) => {
        app.graph.clear();
        const load = LiteGraph.createNode("LoadImage"), crop = LiteGraph.createNode("CNR_PaddedCrop");
        const preview = LiteGraph.createNode("PreviewImage");
        for (const [n, dx] of [[load, -340], [crop, 0], [preview, 380]]) {
            n.pos = [pos[0] + dx, pos[1]];
            app.graph.add(n);
        }
        load.widgets.find(w => w.name === "image").value = image;
        load.connect(0, crop, 0);
        load.connect(1, crop, 1);
        crop.connect(0, preview, 0);
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [0, 0];
        window.cnrNode = crop;
        app.queuePrompt(0, 1);
        return crop.id;
    }""", [image, list(pos)])


def wait_for_crop_preview(page, frontend: Frontend, node_id, timeout_ms: int = 60000):
    """The shown crop preview image element, once it has loaded."""
    if frontend.vue_nodes:
        image = page.locator(f'[data-node-id="{node_id}"] img[src*="cnr_crop_"]')
        image.wait_for(state="visible", timeout=timeout_ms)
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        return image.element_handle()
    page.wait_for_function("""() => {
        app.graph.setDirtyCanvas(true, true);
        const img = window.cnrNode.imgs?.[0];
        return img && img.src.includes("cnr_crop_") && img.complete && img.naturalWidth > 0;
    }""", timeout=timeout_ms)
    return page.evaluate_handle("() => window.cnrNode.imgs[0]")


def canvas_node_box(page) -> dict:
    """Where ``window.cnrNode`` is on the screen (title included), in CSS pixels."""
    return page.evaluate("""() => {
        const node = window.cnrNode, ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
        const title = LiteGraph.NODE_TITLE_HEIGHT;
        return {x: (node.pos[0] + ds.offset[0]) * ds.scale + rect.left,
                y: (node.pos[1] - title + ds.offset[1]) * ds.scale + rect.top,
                width: node.size[0] * ds.scale, height: (node.size[1] + title) * ds.scale};
    }""")
