"""ModelSummary and ConvExplainer in a real page: the summary paints its strip and table, clicks and keys
set ``selected`` (read back through a probe label), only visible rows and blocks are in the DOM for a
600-layer model, layer names stay text; the explainer paints its maps and a clicked position shows the
model's own value. In JupyterLab every key on these views leaves the notebook as it was."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Locator, Page, expect

import harness
from archs import XSS_NAME
from conftest import PRELUDE

pytestmark = pytest.mark.browser

MS = ".cnnw-model-summary"
CE = ".cnnw-conv-explainer"
TIMEOUT = 20_000

IMPORTS = """\
from cnn_widgets.widgets.model_summary import ModelSummary
from cnn_widgets.widgets.conv_explainer import ConvExplainer
import archs
"""

RESNET_SUMMARY = IMPORTS + """\
model, x = archs.build("resnet18_like")
summary = ModelSummary(model, x)
display(W.VBox([summary, mirror(summary, "selected", "selected")]))
"""

# conv → ReLU → grouped stride-2 conv → BN → ReLU → max pool, on a 16×16 image; the reference maps come
# from capture_activations, independently of the widget
SMALL_EXPLAINER = IMPORTS + """\
import json
from torch import nn
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1, groups=2),
                    nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2)).eval()
image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
ce = ConvExplainer(net, image, "2", channel=4)
acts = cnn_widgets.capture_activations(net, image)
display(W.VBox([ce, mirror(ce, "position", "position"), mirror(ce, "channel", "channel"),
                probe("reference", json.dumps(acts["2"][0, 4].tolist()))]))
"""

# Text with its own characters inside these views whose computed font size is below 12 px.
SMALL_TEXT_JS = """(sels) => {
  const small = [];
  for (const root of document.querySelectorAll(sels)) {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'STYLE' || el.closest('[hidden]')) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (own && parseFloat(getComputedStyle(el).fontSize) < 12) {
        small.push(el.className + ': ' + el.textContent.slice(0, 40));
      }
    }
  }
  return small;
}"""


def selected_is(page: Page, value: str) -> None:
    expect(page.locator(".probe-selected")).to_have_text(value, timeout=TIMEOUT)


def test_summary_paints_and_clicks_on_blocks_and_rows_set_selected(open_voila: Callable[..., Page]) -> None:
    page = open_voila([RESNET_SUMMARY])
    selected_is(page, "None")
    root = page.locator(MS)
    caption = "ResNet18Like · input (1, 3, 64, 64) · 52 layers, 60 calls"
    expect(root.locator(".cnnw-summary-caption")).to_have_text(caption)
    blocks = root.locator("rect.cnnw-block")
    assert blocks.count() >= 30, "the strip shows the blocks in view"
    assert root.locator("path.cnnw-arc").count() >= 5, "residual joins are drawn"
    fills = set(blocks.evaluate_all("(els) => els.map((e) => e.getAttribute('fill'))"))
    assert len(fills) >= 4, fills  # conv, norm, activation, pooling
    expect(root.locator(".cnnw-summary-totals")).to_contain_text("11,181,642 parameters")

    for name in ("layer2.0.downsample.0", "maxpool", "layer1.1.conv2"):
        root.locator(f'rect.cnnw-block[data-layer="{name}"]').first.click()
        selected_is(page, name)
        row = root.locator(f'.cnnw-row[data-layer="{name}"]')
        expect(row).to_have_class(re.compile(r"\bcnnw-selected\b"), timeout=TIMEOUT)
        expect(row).to_be_in_viewport()
        expect(root.locator(".cnnw-summary-selected")).to_contain_text(f"selected: {name}")

    root.locator('.cnnw-row[data-layer="layer1"]').click()
    selected_is(page, "layer1")
    # a container selects every block inside it: 2 blocks × (conv1 bn1 relu conv2 bn2 relu)
    expect(root.locator("rect.cnnw-block.cnnw-selected")).to_have_count(12, timeout=TIMEOUT)
    twisty = root.locator('.cnnw-row[data-layer="layer1"] .cnnw-twisty')
    twisty.click()
    expect(root.locator('.cnnw-row[data-layer="layer1"]')).to_have_attribute("aria-expanded", "false")
    expect(root.locator('.cnnw-row[data-layer="layer1.0.conv1"]')).to_have_count(0)
    folded = 2 * 6  # two blocks of five layers each
    assert root.locator(".cnnw-summary-scroll").get_attribute("data-rows") == str(67 - folded)


ROW_GEOMETRY_JS = """(root) => [...root.querySelectorAll('.cnnw-row')].slice(0, 12).map((r) => ({
  top: r.offsetTop, height: r.getBoundingClientRect().height,
  fits: [...r.querySelectorAll('span')].every((s) => s.scrollHeight <= r.clientHeight + 1),
}))"""


def test_rows_grow_with_font_scale_so_scaled_text_fits(open_voila: Callable[..., Page]) -> None:
    """At font_scale 1.5 each row is 1.5x as tall, rows are placed at index x that height (no overlap),
    and every cell's text fits its row; a live change back to 1 re-places them."""
    page = open_voila([RESNET_SUMMARY.replace("ModelSummary(model, x)", "ModelSummary(model, x, font_scale=1.5)"),
                       "button = W.Button(description='scale 1')\n"
                       "button.on_click(lambda _: setattr(summary, 'font_scale', 1.0))\n"
                       "display(button)\n"])
    root = page.locator(MS)
    expect(root.locator(".cnnw-row").nth(9)).to_be_attached(timeout=TIMEOUT)
    rows = root.evaluate(ROW_GEOMETRY_JS)
    assert all(abs(r["height"] - 39) < 0.6 and r["fits"] for r in rows), rows
    assert [r["top"] for r in rows] == [39 * i for i in range(len(rows))], rows
    page.evaluate("() => { window.__ms = document.querySelector('.cnnw-model-summary'); }")
    page.locator("button", has_text="scale 1").click()
    page.wait_for_function("() => getComputedStyle(window.__ms).getPropertyValue('--cnnw-scale').trim() === '1'")
    page.wait_for_function("() => window.__ms.querySelectorAll('.cnnw-row')[1].offsetTop === 26")
    rows = root.evaluate(ROW_GEOMETRY_JS)
    assert all(abs(r["height"] - 26) < 0.6 and r["fits"] for r in rows), rows


def test_six_hundred_layers_keep_only_visible_rows_and_blocks_in_the_dom(open_voila: Callable[..., Page]) -> None:
    page = open_voila([IMPORTS + """\
from torch import nn
layers = [m for _ in range(200) for m in (nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())]
big = nn.Sequential(*layers).eval()
summary = ModelSummary(big, torch.rand(4, 8, 8))
display(W.VBox([summary, mirror(summary, "selected", "selected")]))
"""])
    root = page.locator(MS)
    table = root.locator(".cnnw-summary-scroll")
    assert table.get_attribute("data-rows") == "600"
    # the rows and blocks are painted in a frame after the row count is known: wait for ten of each
    expect(root.locator(".cnnw-row").nth(9)).to_be_attached()
    expect(root.locator("rect.cnnw-block").nth(9)).to_be_attached()
    rows_in_dom = root.locator(".cnnw-row").count()
    blocks_in_dom = root.locator("rect.cnnw-block").count()
    assert 10 <= rows_in_dom <= 40, rows_in_dom
    assert 10 <= blocks_in_dom <= 150, blocks_in_dom
    strip = root.locator(".cnnw-strip-wrap")
    strip.focus()
    page.keyboard.press("End")
    selected_is(page, "599")
    expect(root.locator('rect.cnnw-block[data-layer="599"]')).to_have_class(re.compile(r"\bcnnw-selected\b"))
    expect(root.locator('.cnnw-row[data-layer="599"]')).to_be_in_viewport()
    assert root.locator('.cnnw-row[data-layer="0"]').count() == 0, "rows scrolled out leave the DOM"
    assert root.locator("rect.cnnw-block").count() <= 150
    page.keyboard.press("ArrowLeft")
    selected_is(page, "598")
    table.focus()
    page.keyboard.press("Home")
    selected_is(page, "0")
    page.keyboard.press("PageDown")
    page.keyboard.press("ArrowDown")
    # the probe shows the kernel's trait: wait for the keys' selection to get there and back
    page.wait_for_function("() => document.querySelector('.probe-selected')?.textContent.trim() === "
                           "document.querySelector('.cnnw-row.cnnw-selected')?.dataset.layer "
                           "&& document.querySelector('.probe-selected').textContent.trim() !== '0'", timeout=TIMEOUT)
    selected = int(page.inner_text(".probe-selected"))
    assert 10 <= selected <= 20, selected
    expect(root.locator(f'.cnnw-row[data-layer="{selected}"]')).to_be_in_viewport()
    assert root.locator(".cnnw-row").count() <= 40


def test_layer_names_with_html_are_shown_as_text_and_never_run(open_voila: Callable[..., Page]) -> None:
    evil = f"blocks.{XSS_NAME}"
    page = open_voila([IMPORTS + f"""\
model, x = archs.build("xss_named")
summary = ModelSummary(model, x, selected={evil!r})
ce = ConvExplainer(model, x, {evil!r})
display(W.VBox([summary, ce]))
"""], ready=f"{CE}[data-explained]")
    root = page.locator(MS)
    expect(root.locator(f".cnnw-row[data-layer='{evil}'] .cnnw-label")).to_have_text(XSS_NAME)
    expect(root.locator(".cnnw-summary-selected")).to_contain_text(f"selected: {evil}")
    assert root.locator(f"rect.cnnw-block[data-layer='{evil}']").count() == 1
    assert page.locator(f"{CE} select.cnnw-layer-select option:checked").text_content() == evil
    expect(page.locator(f"{CE} .cnnw-conv-caption")).to_be_visible()
    assert XSS_NAME in page.locator(CE).text_content()
    page.wait_for_timeout(300)  # an injected <img src=x> would have fired onerror by now
    assert page.evaluate("() => typeof window.pwned") == "undefined"
    assert page.evaluate("() => [...document.images].filter((i) => i.getAttribute('src') === 'x').length") == 0
    assert page.locator("img[onerror]").count() == 0


def test_clicking_the_map_explains_the_models_own_value(open_voila: Callable[..., Page]) -> None:
    page = open_voila([SMALL_EXPLAINER], ready=f"{CE}[data-explained]")
    reference = json.loads(page.inner_text(".probe-reference"))
    assert len(reference) == 8 and len(reference[0]) == 8
    for canvas in ("canvas.cnnw-input-map", "canvas.cnnw-output-map"):
        stats = harness.canvas_stats(page, f"{CE} {canvas}")
        assert stats["opaque"] > 0.9 and stats["colors"] > 8 and stats["variance"] > 50, (canvas, stats)
    out = page.locator(f"{CE} canvas.cnnw-output-map")
    cell = float(out.get_attribute("data-cell"))
    assert out.get_attribute("data-rows") == out.get_attribute("data-cols") == "8"
    result = page.locator(f"{CE} .cnnw-conv-result[data-position]")
    for y, x in [(0, 0), (3, 6), (7, 7), (5, 1)]:
        box = out.bounding_box()
        page.mouse.click(box["x"] + (x + 0.5) * cell, box["y"] + (y + 0.5) * cell)
        expect(page.locator(".probe-position")).to_have_text(f"({y}, {x})", timeout=TIMEOUT)
        expect(result).to_have_attribute("data-position", f"{y},{x}", timeout=TIMEOUT)
        data = result.evaluate("(el) => ({...el.dataset})")
        expected = reference[y][x]
        assert abs(float(data["sum"]) + float(data["bias"]) - expected) < 1e-5, (y, x, data, expected)
        assert abs(float(data["captured"]) - expected) < 1e-6
        text = result.inner_text()
        shown = re.search(r"the map holds (\S+)", text)
        assert shown and abs(float(shown.group(1)) - expected) < 1e-5, text
        total = re.search(r"= (\S+)\s*$", text.splitlines()[0])
        assert total and abs(float(total.group(1)) - expected) < 1e-5, text
        assert page.locator(f"{CE} .cnnw-conv-explain.cnnw-stale").count() == 0
    # the BatchNorm, ReLU and pool that follow are worked out too
    steps = page.locator(f"{CE} .cnnw-step")
    expect(steps).to_have_count(3)
    expect(steps.nth(2)).to_contain_text("MaxPool2d")
    expect(page.locator(f"{CE} .cnnw-patch .cnnw-kcell")).to_have_count(9)
    # output channel 4 of a 2-group conv reads input channels 4‥7
    expect(page.locator(f"{CE} .cnnw-sum-cells .cnnw-kcell")).to_have_count(4)
    expect(page.locator(f"{CE} .cnnw-sums-title")).to_contain_text("input channels 4‥7 (group 1 of 2)")


# -- JupyterLab: the keys do what they say and nothing else -----------------------------------------------

CELLS: list[tuple[str, str]] = [
    ("markdown", "# Summary and explainer\nDriven from the keyboard."),
    ("code", PRELUDE),
    ("code", RESNET_SUMMARY),
    ("code", SMALL_EXPLAINER),
    ("markdown", "## Below the widgets"),
    ("code", "below = 1"),
    ("code", "below + 1"),
]


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(s) if kind == "markdown" else nbformat.v4.new_code_cell(s)
                for kind, s in CELLS]
    nbformat.write(nb, path)
    return path


def press(page: Page, control: Locator, key: str, probe: str, expected: str) -> None:
    """Press ``key`` on the focused ``control``: the probe shows ``expected``, the control keeps the focus
    and the notebook keeps its active cell, mode, headings and cells."""
    before = page.evaluate(harness.NOTEBOOK_STATE_JS)
    page.keyboard.press(key)
    expect(page.locator(f".probe-{probe}"), f"{key} → {expected}").to_have_text(expected, timeout=TIMEOUT)
    assert control.evaluate("(el) => el === document.activeElement"), f"{key}: the control lost the focus"
    after = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert after == before, f"{key}: the notebook reacted: {before} → {after}"


def test_keys_move_the_selection_and_the_position_without_notebook_side_effects(
    open_lab: Callable[[Path], Page], tmp_path: Path
) -> None:
    page = open_lab(write_notebook(tmp_path / "summary_keys.ipynb"))
    cells = harness.lab_run_all(page, timeout_s=240)
    assert not [c for c in cells if c["errors"]], cells
    page.wait_for_function(
        "(sels) => sels.every((s) => document.querySelector(s)?.dataset.paintCount)",
        arg=[MS, f"{CE}[data-explained]"], timeout=60_000,
    )
    state = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert state["mode"] == "command" and state["collapsed"] == 0 and state["visible"] == len(CELLS), state
    assert page.evaluate(SMALL_TEXT_JS, f"{MS}, {CE}") == [], "text below 12 px is unreadable on a projector"

    summary = page.locator(MS)
    strip = summary.locator(".cnnw-strip-wrap")
    strip.scroll_into_view_if_needed()
    strip.focus()
    for key, name in [("ArrowRight", "conv1"), ("ArrowRight", "bn1"), ("ArrowRight", "relu"), ("ArrowLeft", "bn1"),
                      ("End", "fc"), ("ArrowLeft", "avgpool"), ("Home", "conv1"), ("Escape", "None"),
                      ("Enter", "conv1"), (" ", "conv1")]:
        press(page, strip, key, "selected", name)
    table = summary.locator(".cnnw-summary-scroll")
    table.focus()
    for key, name in [("ArrowDown", "bn1"), ("ArrowDown", "relu"), ("ArrowDown", "maxpool"), ("ArrowDown", "layer1"),
                      ("ArrowUp", "maxpool"), ("ArrowDown", "layer1"), ("ArrowRight", "layer1.0")]:
        press(page, table, key, "selected", name)
    folds = [  # (key, selected after it, the group it folds or unfolds, expanded after it)
        ("ArrowLeft", "layer1.0", "layer1.0", "false"), ("ArrowLeft", "layer1", "layer1", "true"),
        ("ArrowLeft", "layer1", "layer1", "false"), ("ArrowDown", "layer2", "layer1", "false"),
        ("ArrowUp", "layer1", "layer1", "false"), ("Enter", "layer1", "layer1", "true"),
        ("ArrowRight", "layer1.0", "layer1.0", "false"), ("ArrowRight", "layer1.0", "layer1.0", "true"),
        ("ArrowDown", "layer1.0.conv1", "layer1.0", "true"),
    ]
    for key, name, group, expanded in folds:
        press(page, table, key, "selected", name)
        expect(summary.locator(f'.cnnw-row[data-layer="{group}"]'), f"{key} → {group}").to_have_attribute(
            "aria-expanded", expanded, timeout=TIMEOUT)
    for key, name in [("End", "fc"), ("Home", "conv1"), ("Escape", "None")]:
        press(page, table, key, "selected", name)

    explainer = page.locator(CE)
    out = explainer.locator("canvas.cnnw-output-map")
    out.scroll_into_view_if_needed()
    out.focus()
    for key, pos in [("ArrowRight", "(4, 5)"), ("ArrowDown", "(5, 5)"), ("ArrowLeft", "(5, 4)"), ("ArrowUp", "(4, 4)"),
                     ("End", "(7, 7)"), ("Home", "(0, 0)")]:
        press(page, out, key, "position", pos)
    expect(explainer.locator(".cnnw-conv-result")).to_have_attribute("data-position", "0,0", timeout=TIMEOUT)
    channel = explainer.locator("input.cnnw-channel")
    channel.focus()
    press(page, channel, "ArrowUp", "channel", "5")
    press(page, channel, "ArrowDown", "channel", "4")
    final = page.evaluate(harness.NOTEBOOK_STATE_JS)
    assert final["mode"] == "command" and final["collapsed"] == 0 and final["visible"] == len(CELLS), final
