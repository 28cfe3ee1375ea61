"""Render workflows/<name>.png: each shipped workflow as ComfyUI's own canvas draws it.

Starts the CI-host ComfyUI with this pack on 127.0.0.1, opens it in headless Chromium, loads each
workflow and screenshots the canvas. Needs Chromium (Debian package) and playwright (test deps).

    python tools/render_previews.py
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import comfy_server  # noqa: E402
from example_images import write_examples  # noqa: E402

SIZE = {"width": 1600, "height": 900}


def main() -> None:
    from playwright.sync_api import sync_playwright
    workflows = sorted((HERE.parent / "workflows").glob("*.json"))
    with comfy_server.running_server() as (url, scratch), sync_playwright() as p:
        write_examples(scratch / "input")
        browser = p.chromium.launch(executable_path=comfy_server.chromium_path(), args=comfy_server.CHROMIUM_ARGS)
        page = browser.new_page(viewport=SIZE)
        page.goto(url, wait_until="networkidle")
        page.wait_for_function("() => window.app && window.app.graph", timeout=60000)
        page.add_style_tag(content=".comfy-menu, .comfy-settings-btn { display: none !important; }")
        for path in workflows:
            page.evaluate("(w) => { app.loadGraphData(w); }", json.loads(path.read_text()))
            page.evaluate("""() => {
                const nodes = app.graph._nodes;
                const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1]);
                const x2 = Math.max(...nodes.map(n => n.pos[0] + n.size[0]));
                const y2 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
                const ds = app.canvas.ds;
                ds.scale = Math.min(1.0, innerWidth / (x2 - Math.min(...xs) + 80),
                                    innerHeight / (y2 - Math.min(...ys) + 120));
                ds.offset = [-Math.min(...xs) + 40, -Math.min(...ys) + 60];
                app.graph.setDirtyCanvas(true, true);
            }""")
            page.wait_for_timeout(800)
            page.locator("canvas").first.screenshot(path=str(path.with_suffix(".png")))
        browser.close()


if __name__ == "__main__":
    main()
