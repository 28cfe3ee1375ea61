"""The web extension in headless Chromium against a real ComfyUI server started on 127.0.0.1.

Each test runs on every frontend in ``tools/frontends.py``: the host's own (the CI host's 2024 LiteGraph
frontend, or a current host's: HOST_FRONTEND_ROOT or its environment's), and the pinned newest frontend
with Nodes 2.0 off and on (those two need a current host: ``COMFYUI_PATH``). Assertions read what the
page renders: the Vue node's DOM in Nodes 2.0, widget layout and image elements on the canvas.
"""
import json
import os

import comfy_host
import comfy_server
import frontends
import pytest
from example_images import INPAINT, write_examples

pytestmark = [pytest.mark.comfy, pytest.mark.browser]

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency (make env)")

TIMELINE = "cnr_timeline"
WORKFLOWS = comfy_host.REPO_ROOT / "workflows"
BOX_COLOUR = (40, 255, 80)  # the crop box colour nodes/crop_nodes.py draws


@pytest.fixture(scope="module", params=frontends.FRONTENDS, ids=lambda f: f.name)
def page(request):
    frontend = request.param
    reason = frontends.unavailable(frontend)
    if reason:
        pytest.skip(reason)
    with comfy_server.running_server(extra_args=frontends.server_args(frontend)) as (url, scratch):
        write_examples(scratch / "input", 128)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=comfy_server.chromium_path(), args=comfy_server.CHROMIUM_ARGS)
            page = frontends.open_page(browser, url, frontend)
            page.cnr_frontend = frontend
            yield page
            browser.close()


def next_frames(page):
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def vue_node(page, node_id):
    return page.locator(f'[data-node-id="{node_id}"]')


def shown_widget_names(page, node_id):
    """Widgets the renderer shows: the Vue node's widget rows, or the rows the canvas draws."""
    next_frames(page)
    if page.cnr_frontend.vue_nodes:
        names = vue_node(page, node_id).locator("[data-widget-name]").evaluate_all(
            "rows => rows.filter(r => r.offsetParent !== null).map(r => r.dataset.widgetName)")
        return [name for name in names if name != TIMELINE]
    # Current canvases draw what isWidgetVisible allows; the 2024 LiteGraph draws nothing for an unknown type.
    return page.evaluate("""(timeline) => {
        const node = window.cnrNode;
        const drawn = (w) => node.isWidgetVisible ? node.isWidgetVisible(w) : w.type !== "cnr-hidden";
        return node.widgets.filter(w => w.name !== timeline && drawn(w)).map(w => w.name);
    }""", TIMELINE)


def test_the_page_runs_the_frontend_under_test(page):
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    version = frontends.served_version(page)
    if page.cnr_frontend.newest:
        assert version == frontends.pinned_version()
    elif not comfy_host.is_current_host():
        assert version == "legacy"
    elif os.environ.get(frontends.HOST_ENV_VAR):
        requirements = (comfy_host.comfyui_root() / "requirements.txt").read_text()
        assert f"comfyui-frontend-package=={version}" in requirements.splitlines()
    if page.cnr_frontend.vue_nodes:
        vue_node(page, node_id).wait_for(state="visible", timeout=20000)
    else:
        next_frames(page)
        assert vue_node(page, node_id).count() == 0


def test_page_loads_the_extension(page):
    names = page.evaluate("() => window.app.extensions.map(e => e.name)")
    assert "ControlNetRefine.UI" in names


def timeline(page, node_id):
    scope = vue_node(page, node_id) if page.cnr_frontend.vue_nodes else page
    return scope.locator(".cnr-timeline")


def test_timeline_active_steps_follow_start_and_end(page):
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    frontends.set_widget(page, "end_percent", 0.5)
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 10 of 20 executed steps (assumed 20 steps)")
    assert shown.locator('.cnr-timeline-step[data-active="true"]').count() == 10
    frontends.set_widget(page, "start_percent", 0.25)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 5 of 20 executed steps (assumed 20 steps)")
    active = shown.locator(".cnr-timeline-step").evaluate_all("cells => cells.map(c => c.dataset.active === 'true')")
    assert active == [5 <= i < 10 for i in range(20)]
    assert page.evaluate("() => window.cnrNode.cnrActiveSteps(20)") == list(range(5, 10))


def test_timeline_marks_the_steps_that_reuse_residuals(page):
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    frontends.set_widget(page, "reuse_every", 3)
    frontends.set_widget(page, "start_percent", 0.25)
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 15 of 20 executed steps (assumed 20 steps); ControlNet runs on 5")
    reused = shown.locator(".cnr-timeline-step").evaluate_all("cells => cells.map(c => c.dataset.reused === 'true')")
    assert [i for i, r in enumerate(reused) if not r and i >= 5] == [5, 8, 11, 14, 17]


def test_timeline_shows_the_chained_keyframes_strength_at_every_step(page):
    node_id = page.evaluate("""() => {
        app.graph.clear();
        const set = (node, name, value) => { node.widgets.find(w => w.name === name).value = value; };
        const first = LiteGraph.createNode("CNR_StrengthKeyframe");
        const second = LiteGraph.createNode("CNR_StrengthKeyframe");
        const apply = LiteGraph.createNode("CNR_ApplyControlResiduals");
        [first, second, apply].forEach((node, i) => { node.pos = [20 + 330 * i, 20]; app.graph.add(node); });
        set(first, "start_percent", 0.25); set(first, "strength", 0.5); set(first, "guarantee_steps", 8);
        set(second, "start_percent", 0.3); set(second, "strength", 0.0);
        first.connect(0, second, second.inputs.findIndex(i => i.name === "prev_keyframes"));
        second.connect(0, apply, apply.inputs.findIndex(i => i.name === "keyframes"));
        app.canvas.ds.scale = 0.5;
        app.graph.setDirtyCanvas(true, true);
        window.cnrNode = apply;
        apply.cnrRefresh();
        return apply.id;
    }""")
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 20 of 20 executed steps (assumed 20 steps); 2 keyframes")
    cells = shown.locator(".cnr-timeline-step")
    strengths = cells.evaluate_all("cells => cells.map(c => Number(c.dataset.strength))")
    assert strengths == [1.0] * 5 + [0.5] * 8 + [0.0] * 7
    starts = cells.evaluate_all("cells => cells.map(c => c.dataset.keyframeStart === 'true')")
    assert [i for i, s in enumerate(starts) if s] == [5, 13]
    active = cells.evaluate_all("cells => cells.map(c => c.dataset.active === 'true')")
    assert active == [True] * 13 + [False] * 7


def test_timeline_is_shown_inside_the_node(page):
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    label = timeline(page, node_id).locator(".cnr-timeline-label")
    playwright_api.expect(label).to_be_visible()
    # The legacy frontend places DOM widgets on its next canvas draw: the label may first show at (0, 0).
    for _ in range(20):
        box = label.bounding_box()
        if page.cnr_frontend.vue_nodes:
            node_box = vue_node(page, node_id).bounding_box()
        else:
            node_box = frontends.canvas_node_box(page)
        if node_box["x"] <= box["x"] and node_box["y"] <= box["y"]:
            break
        page.wait_for_timeout(100)
    assert node_box["x"] <= box["x"] and box["x"] + box["width"] <= node_box["x"] + node_box["width"] + 1
    assert node_box["y"] <= box["y"] and box["y"] + box["height"] <= node_box["y"] + node_box["height"] + 1


def test_advanced_inputs_are_shown_by_control_mode(page):
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    always = {"strength", "start_percent", "end_percent", "control_mode", "resize_mode", "window_timing",
              "block_weights", "latent_strengths", "reuse_every", "reuse_threshold"}
    frontends.set_widget(page, "control_mode", "balanced")
    assert set(shown_widget_names(page, node_id)) == always | {"uncond_multiplier"}
    frontends.set_widget(page, "control_mode", "my prompt is more important")
    assert set(shown_widget_names(page, node_id)) == always | {"soft_base", "uncond_multiplier"}
    frontends.set_widget(page, "control_mode", "controlnet is more important")
    assert set(shown_widget_names(page, node_id)) == always | {"soft_base"}


CROP_OPTIONS = {"regions", "mask_fill_holes", "mask_expand", "mask_invert", "mask_hipass", "context_factor",
                "downscale_filter", "preresize", "extend_unit", "extend_up", "extend_down", "extend_left",
                "extend_right"}


def test_padded_crop_shows_only_the_size_inputs_of_its_mode(page):
    node_id = frontends.add_node(page, "CNR_PaddedCrop")
    always = {"padding", "size_mode", "multiple", "filter", "paste_mode", "feather"} | CROP_OPTIONS
    frontends.set_widget(page, "size_mode", "long side")
    assert set(shown_widget_names(page, node_id)) == always | {"long_side"}
    frontends.set_widget(page, "size_mode", "native (no resize)")
    assert set(shown_widget_names(page, node_id)) == always
    frontends.set_widget(page, "size_mode", "width x height")
    assert set(shown_widget_names(page, node_id)) == always | {"width", "height"}


def test_padded_crop_shows_only_the_preresize_bounds_its_mode_uses(page):
    node_id = frontends.add_node(page, "CNR_PaddedCrop")
    bounds = {"preresize_min_width", "preresize_min_height", "preresize_max_width", "preresize_max_height"}
    assert not set(shown_widget_names(page, node_id)) & bounds
    frontends.set_widget(page, "preresize", "ensure minimum")
    assert set(shown_widget_names(page, node_id)) & bounds == {"preresize_min_width", "preresize_min_height"}
    frontends.set_widget(page, "preresize", "ensure minimum and maximum")
    assert set(shown_widget_names(page, node_id)) & bounds == bounds


def test_hidden_rows_leave_no_gap_on_the_canvas(page):
    if page.cnr_frontend.vue_nodes:
        pytest.skip("canvas layout only: Nodes 2.0 lays widgets out in the DOM (checked by the visibility tests)")
    frontends.add_node(page, "CNR_ApplyControlResiduals")
    gap = """() => {
        app.canvas.draw(true, true);
        const y = (name) => window.cnrNode.widgets.find(w => w.name === name).last_y;
        return y("uncond_multiplier") - y("window_timing");
    }"""
    frontends.set_widget(page, "control_mode", "my prompt is more important")
    with_soft_base = page.evaluate(gap)
    frontends.set_widget(page, "control_mode", "balanced")
    without = page.evaluate(gap)
    assert without < with_soft_base * 0.75, (without, with_soft_base)


def test_saved_workflow_keeps_hidden_values_and_stores_nothing_for_the_timeline(page):
    frontends.add_node(page, "CNR_ApplyControlResiduals")
    frontends.set_widget(page, "soft_base", 0.8254)
    frontends.set_widget(page, "control_mode", "balanced")
    saved = page.evaluate("() => window.cnrNode.serialize().widgets_values")
    inputs = page.evaluate("(t) => window.cnrNode.widgets.filter(w => w.name !== t).map(w => w.name)", TIMELINE)
    assert len(saved) == len(inputs)
    assert saved[inputs.index("soft_base")] == 0.8254


def test_crop_preview_with_its_box_appears_after_a_run(page):
    crop_id = frontends.queue_crop_preview(page, INPAINT)
    handle = frontends.wait_for_crop_preview(page, page.cnr_frontend, crop_id)
    box_pixels = handle.evaluate("""(img, colour) => {
        const c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext("2d");
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        const near = (i) => [0, 1, 2].every(k => Math.abs(d[i + k] - colour[k]) < 8);
        for (let i = 0; i < d.length; i += 4) if (near(i)) n++;
        return n;
    }""", list(BOX_COLOUR))
    assert box_pixels > 100


def test_extension_script_is_served_once(page):
    scripts = page.evaluate("async () => (await (await fetch('/extensions')).json())")
    assert len([s for s in scripts if s.endswith("/controlnet_refine.js")]) == 1


def test_a_click_on_a_nodes_2_widget_updates_the_timeline(page):
    if not page.cnr_frontend.vue_nodes:
        pytest.skip("Nodes 2.0 only: canvas widgets are drawn, not DOM elements (callbacks are tested above)")
    node_id = frontends.add_node(page, "CNR_ApplyControlResiduals")
    vue_node(page, node_id).locator('[data-widget-name="end_percent"] [data-testid="decrement"]').click()
    # One step (0.001) below 1.0: the last executed step no longer fits the window.
    label = timeline(page, node_id).locator(".cnr-timeline-label")
    playwright_api.expect(label).to_have_text("acts on 19 of 20 executed steps (assumed 20 steps)")


def load_workflow(page, name):
    """Opens workflows/<name>.json as a user does (no missing-model dialogs); ``window.cnrNode`` is its Apply node.

    Returns that node's id.
    """
    return page.evaluate("""async (workflow) => {
        await app.loadGraphData(workflow, true, true, null,
                                {showMissingNodesDialog: false, showMissingModelsDialog: false});
        const nodes = app.graph._nodes || app.graph.nodes;
        window.cnrNode = nodes.find(n => n.comfyClass === "CNR_ApplyControlResiduals");
        return window.cnrNode.id;
    }""", json.loads((WORKFLOWS / f"{name}.json").read_text()))


def set_node_widget(page, node_type: str, name: str, value):
    """Sets a widget of the graph's ``node_type`` node as the frontend does after an edit."""
    page.evaluate("""([type, name, value]) => {
        const node = (app.graph._nodes || app.graph.nodes).find(n => n.comfyClass === type);
        const w = node.widgets.find(w => w.name === name);
        w.value = value;
        w.callback && w.callback(value);
        app.graph.setDirtyCanvas(true, true);
    }""", [node_type, name, value])


def test_timeline_has_a_cell_per_step_the_z_image_img2img_sampler_executes(page):
    node_id = load_workflow(page, "z_image_fun_controlnet_img2img")
    # CNR_Img2ImgStrength, 8 steps at strength 0.8 on a flow-matching model (ModelSamplingAuraFlow):
    # diffusers' SD3/Flux rule skips int(8 - 6.4) = 1 step, so 7 run.
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text("acts on 7 of 7 executed steps")
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(7)


# Executed steps of the sampler each shipped workflow's Apply nodes reach (CNR_Img2ImgStrength: 20 x 0.6,
# 28 x 0.75, 8 x 0.8 under the flow-matching rule).
WORKFLOW_STEPS = {"controlnet_img2img": 12, "controlnet_inpaint": 20, "controlnet_stacked_windows": 20,
                  "controlnet_txt2img": 20, "flux_controlnet_img2img": 21, "qwen_image_controlnet_inpaint": 20,
                  "t2i_adapter_txt2img": 20, "union_sdxl_two_types": 25, "z_image_fun_controlnet_img2img": 7,
                  "z_image_fun_controlnet_inpaint": 8}


def test_every_shipped_workflow_is_listed_with_its_steps():
    assert set(WORKFLOW_STEPS) == {path.stem for path in WORKFLOWS.glob("*.json")}


@pytest.mark.parametrize("name", sorted(WORKFLOW_STEPS))
def test_every_apply_node_of_a_shipped_workflow_counts_its_samplers_steps(page, name):
    load_workflow(page, name)
    page.wait_for_function("""() => (app.graph._nodes || app.graph.nodes)
        .filter(n => n.comfyClass === "CNR_ApplyControlResiduals").length > 0""")
    shown = page.evaluate("""(timeline) => (app.graph._nodes || app.graph.nodes)
        .filter(n => n.comfyClass === "CNR_ApplyControlResiduals")
        .map(n => n.widgets.find(w => w.name === timeline).element)
        .map(e => [e.querySelectorAll(".cnr-timeline-step").length, e.dataset.stepsAssumed])""", TIMELINE)
    assert shown and shown == [[WORKFLOW_STEPS[name], "false"]] * len(shown)


# JavaScript opening a test graph: an empty graph, make(type, x, y) adds a node, set(node, widget, value).
NEW_GRAPH = """
        app.graph.clear();
        const make = (type, x, y) => {
            const node = LiteGraph.createNode(type);
            node.pos = [x, y];
            app.graph.add(node);
            return node;
        };
        const set = (node, name, value) => { node.widgets.find(w => w.name === name).value = value; };
"""


def test_timeline_counts_ksampler_advanced_and_scheduler_steps_and_assumes_20_where_they_disagree(page):
    node_id = page.evaluate("() => {" + NEW_GRAPH + """
        const apply = make("CNR_ApplyControlResiduals", 20, 20);
        const custom = make("SamplerCustom", 360, 20), scheduler = make("BasicScheduler", 20, 420);
        const advanced = make("KSamplerAdvanced", 700, 20);
        set(scheduler, "steps", 10); set(scheduler, "denoise", 0.5);
        set(advanced, "steps", 30); set(advanced, "start_at_step", 4); set(advanced, "end_at_step", 10);
        scheduler.connect(0, custom, custom.inputs.findIndex(i => i.name === "sigmas"));
        apply.connect(0, custom, custom.inputs.findIndex(i => i.name === "model"));
        apply.connect(0, advanced, advanced.inputs.findIndex(i => i.name === "model"));
        app.canvas.ds.scale = 0.5;
        app.graph.setDirtyCanvas(true, true);
        window.cnrNode = apply;
        return apply.id;
    }""")
    shown = timeline(page, node_id)
    # SamplerCustom runs BasicScheduler's 10 steps; KSamplerAdvanced runs steps 4 to 10 of 30.
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 20 of 20 executed steps (assumed 20 steps)")
    set_node_widget(page, "KSamplerAdvanced", "end_at_step", 14)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text("acts on 10 of 10 executed steps")
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(10)


def test_timeline_reaches_sampler_custom_advanced_through_its_guider(page):
    if not page.evaluate("() => !!LiteGraph.registered_node_types.CFGGuider"):
        pytest.skip("this host's ComfyUI lacks CFGGuider and SamplerCustomAdvanced (the 2024 CI host): "
                    "set COMFYUI_PATH")
    node_id = page.evaluate("() => {" + NEW_GRAPH + """
        const apply = make("CNR_ApplyControlResiduals", 20, 20), guider = make("CFGGuider", 360, 20);
        const sampler = make("SamplerCustomAdvanced", 700, 20), strength = make("CNR_Img2ImgStrength", 360, 300);
        set(strength, "steps", 10); set(strength, "strength", 0.25);
        set(strength, "rule", "round (SplitSigmasDenoise)");
        apply.connect(0, guider, guider.inputs.findIndex(i => i.name === "model"));
        strength.connect(0, sampler, sampler.inputs.findIndex(i => i.name === "sigmas"));
        guider.connect(0, sampler, sampler.inputs.findIndex(i => i.name === "guider"));
        app.canvas.ds.scale = 0.5;
        app.graph.setDirtyCanvas(true, true);
        window.cnrNode = apply;
        return apply.id;
    }""")
    # The round rule is Python's round(10 x 0.25): 2.5 rounds to even, 2 steps.
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text("acts on 2 of 2 executed steps")
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(2)


def test_timeline_follows_the_ksampler_steps_widget(page):
    node_id = load_workflow(page, "controlnet_txt2img")
    frontends.set_widget(page, "end_percent", 0.5)
    set_node_widget(page, "KSampler", "steps", 12)
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text("acts on 6 of 12 executed steps")
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(12)
    active = shown.locator(".cnr-timeline-step").evaluate_all("cells => cells.map(c => c.dataset.active === 'true')")
    assert active == [i < 6 for i in range(12)]


def test_timeline_assumes_20_steps_once_the_model_output_is_unconnected(page):
    node_id = load_workflow(page, "z_image_fun_controlnet_inpaint")
    shown = timeline(page, node_id)
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(8)
    page.evaluate("() => { window.cnrNode.disconnectOutput(0); app.graph.setDirtyCanvas(true, true); }")
    playwright_api.expect(shown.locator(".cnr-timeline-label")).to_have_text(
        "acts on 20 of 20 executed steps (assumed 20 steps)")
    playwright_api.expect(shown.locator(".cnr-timeline-step")).to_have_count(20)


def test_no_console_error_comes_from_the_extension(page):
    """Runs after the others on each frontend, so it sees the errors of every interaction above."""
    ours = [e for e in page.cnr_errors if f"/extensions/{comfy_host.PACK_FOLDER_NAME}/" in e
            or "ControlNetRefine" in e]
    assert ours == [], "\n".join(ours)
    if frontends.served_version(page) == "legacy":
        # The 2024 frontend logs nothing on its own; current ones log their own missing user files,
        # settings hooks and blocked update checks, which are not this pack's.
        assert page.cnr_errors == [], "\n".join(page.cnr_errors)
