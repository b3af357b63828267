"""AttributionView's surroundings of the heatmap in a real page (Voila + Chromium): the top-predictions
chart keeps every value label inside the figure whatever the probability, and the result's notes show as
text lines under the heatmap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

AV = ".cnnw-attribution-view"

# A model whose class probabilities are fixed by the last layer's bias (its weights are zero), so the
# chart shows known values; a conv layer keeps every CAM method applicable.
FIXED = """\
from torch import nn

class Fixed(nn.Module):
    def __init__(self, probs):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, len(probs))
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.log(torch.tensor(probs)))
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

labels = ["circle", "square", "triangle", "cross", "star"]
image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
"""

# Every label of the chart (bar values, axis ticks, title): its box, the box of the figure's svg and of
# the plot area the marks are clipped to.
CHART_BOXES_JS = """(fig) => {
  const box = (el) => { const r = el.getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width}; };
  const svg = fig.querySelector('svg.svg-figure');
  return {
    svg: box(svg),
    plot: box(fig.querySelector('rect.plotarea_events')),
    labels: [...fig.querySelectorAll('text.bar_label')].map((t) => ({text: t.textContent, ...box(t), size: parseFloat(getComputedStyle(t).fontSize)})),
    texts: [...fig.querySelectorAll('text')].filter((t) => t.textContent.trim()).map((t) => ({text: t.textContent, ...box(t), size: parseFloat(getComputedStyle(t).fontSize)})),
  };
}"""


def inside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> bool:
    return (inner["left"] >= outer["left"] - slack and inner["right"] <= outer["right"] + slack
            and inner["top"] >= outer["top"] - slack and inner["bottom"] <= outer["bottom"] + slack)


@pytest.mark.parametrize("values", [
    [1.0, 0.922, 0.5, 0.004, 0.0],  # the ends of the range and the value that used to show as "9"
    [0.999, 0.9994, 0.875, 0.1, 0.01],
], ids=["ends", "high"])
def test_every_bar_label_stays_inside_the_chart(
    open_voila: Callable[..., Page], tmp_path: Path, values: list[float]
) -> None:
    page = open_voila([
        FIXED + "view = cnn_widgets.AttributionView(Fixed([0.922, 0.05, 0.02, 0.006, 0.002]).eval(), image, labels=labels)\n"
        f"view._bars.y = {values!r}\n"
        "display(view)",
    ], ready=".cnnw-predictions text.bar_label")
    figure = page.locator(".cnnw-predictions").first
    expected = [f"{100 * v:.1f}%" for v in values]
    expect(figure.locator("text.bar_label")).to_have_text(expected)
    figure.screenshot(path=str(tmp_path / "chart.png"))
    boxes = figure.evaluate(CHART_BOXES_JS)
    assert [label["text"] for label in boxes["labels"]] == expected
    for label in boxes["labels"]:
        # bqplot clips marks to the plot area: a label past its edge is cut ("92.2%" showed as "9")
        assert label["width"] > 10, label
        assert inside(label, boxes["plot"]), (label, boxes["plot"])
        assert label["size"] >= 12, label
    for text in boxes["texts"]:
        assert inside(text, boxes["svg"]), (text, boxes["svg"])
        assert text["size"] >= 12, text


def test_result_notes_show_as_text_lines_under_the_heatmap(open_voila: Callable[..., Page]) -> None:
    page = open_voila([
        FIXED
        + "model = Fixed([0.6, 0.1, 0.1, 0.1, 0.1]).eval()\n"
        "plain = cnn_widgets.AttributionView(model, image, labels=labels)\n"
        "noted = cnn_widgets.AttributionView(model, image, labels=labels)\n"
        "plain.wait(30); noted.wait(30)\n"
        "notes = ['guided backprop equals the gradient on this model: it has no nn.ReLU', '<b>not bold</b>']\n"
        "noted._canvas._result = {**noted._canvas._result, 'notes': notes}\n"
        "plain._canvas._result = {**plain._canvas._result, 'notes': []}\n"
        "plain.add_class('plain-view'); noted.add_class('noted-view')\n"
        "display(plain, noted)",
    ], ready=f".noted-view {AV}[data-paint-count]")
    noted = page.locator(f".noted-view {AV}")
    lines = noted.locator(".cnnw-notes .cnnw-note")
    expect(lines).to_have_text([
        "guided backprop equals the gradient on this model: it has no nn.ReLU", "<b>not bold</b>",
    ])
    assert noted.locator(".cnnw-notes b").count() == 0, "a note is text, never HTML"
    expect(noted.locator(".cnnw-notes")).to_be_visible()
    # under the heatmap
    canvas_box = noted.locator("canvas.cnnw-overlay").bounding_box()
    notes_box = noted.locator(".cnnw-notes").bounding_box()
    assert canvas_box and notes_box and notes_box["y"] >= canvas_box["y"] + canvas_box["height"], (canvas_box, notes_box)
    assert float(noted.locator(".cnnw-note").first.evaluate("(el) => parseFloat(getComputedStyle(el).fontSize)")) >= 12
    plain = page.locator(f".plain-view {AV}")
    plain.locator("canvas.cnnw-overlay").wait_for()
    expect(plain.locator(".cnnw-notes .cnnw-note")).to_have_count(0)
    expect(plain.locator(".cnnw-notes")).to_be_hidden()
