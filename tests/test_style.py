"""Projector-ready views, the Python half: ``cnn_widgets.style(scale=...)`` sets the default ``font_scale``
of new views and updates the live views that follow it (a view given its own keeps it), the registry
holds views weakly, AttributionView forwards its scale to its canvas and its bqplot chart, compare()
takes ``font_scale=`` and defaults to one colour scale per method, and every method option carries a
human label for its control (Captum's name stays the key)."""

from __future__ import annotations

import gc
import math
import weakref

import anywidget
import pytest
from bqplot import Axis, Figure, LinearScale

from cnn_widgets import METHODS, ActivationBrowser, AttributionView, ConvExplainer, FilterGrid, ModelSummary, compare
from cnn_widgets.style import FONT_SCALE_RANGE, default_scale, is_following, scale_chart, style
from cnn_widgets.widgets.panel import Panel
from test_attribution_view import image, tiny

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(autouse=True)
def reset_style():
    """Each test starts and ends at scale 1 (the setting is process-wide)."""
    style(scale=1.0)
    yield
    style(scale=1.0)


def font_px(style_dict: dict) -> float:
    return float(style_dict["font-size"].removesuffix("px"))


def test_style_without_arguments_returns_the_settings_and_changes_nothing():
    assert style() == {"scale": 1.0}
    assert style(scale=1.5) == {"scale": 1.5}
    assert style() == {"scale": 1.5} and default_scale() == 1.5


def test_new_views_start_at_the_style_scale_and_live_ones_follow_it():
    model = tiny()
    before = FilterGrid(model)
    assert before.font_scale == 1.0
    style(scale=1.5)
    assert before.font_scale == 1.5  # a live view follows
    after = FilterGrid(model)
    assert after.font_scale == 1.5  # a new view starts there
    style(scale=0.75)
    assert (before.font_scale, after.font_scale) == (0.75, 0.75)


def test_a_view_with_its_own_font_scale_keeps_it():
    model = tiny()
    given = FilterGrid(model, font_scale=2.0)
    chosen = FilterGrid(model)
    chosen.font_scale = 1.25
    follower = FilterGrid(model)
    style(scale=1.5)
    assert (given.font_scale, chosen.font_scale, follower.font_scale) == (2.0, 1.25, 1.5)
    assert not is_following(given) and not is_following(chosen) and is_following(follower)


VIEWS = {
    "ActivationBrowser": lambda m, **kw: ActivationBrowser(m, image(0), **kw),
    "AttributionView": lambda m, **kw: AttributionView(m, image(0), **kw),
    "ConvExplainer": lambda m, **kw: ConvExplainer(m, image(0), "features.0", **kw),
    "FilterGrid": lambda m, **kw: FilterGrid(m, **kw),
    "ModelSummary": lambda m, **kw: ModelSummary(m, image(0), **kw),
}


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_every_view_takes_font_scale_and_follows_style(name, untouched):
    model = tiny()
    make = VIEWS[name]
    with untouched(model):
        follower, own = make(model), make(model, font_scale=2.0)
        style(scale=1.5)  # changes text only: nothing runs on the model for it
        later = make(model)
        assert (follower.font_scale, own.font_scale, later.font_scale) == (1.5, 2.0, 1.5)
        for view in (follower, own, later):  # the model is checked once every view's work has ended
            if hasattr(view, "wait"):
                assert view.wait(60)


def test_the_registry_holds_views_weakly():
    class Plain(Panel):
        pass

    view = Plain()
    assert is_following(view) and view.font_scale == 1.0
    style(scale=2.0)
    assert view.font_scale == 2.0
    ref = weakref.ref(view)
    del view
    gc.collect()
    assert ref() is None, "style() must not keep views alive"
    style(scale=1.5)  # the dead view is simply gone


def test_a_closed_widget_is_left_alone():
    class Shown(Panel, anywidget.AnyWidget):
        _esm = "export default { render() {} };"

    view = Shown()
    view.close()
    style(scale=1.5)  # no error for a widget without a comm
    assert Shown().font_scale == 1.5


@pytest.mark.parametrize("bad, error, match", [
    (0.1, ValueError, "scale must be between"),
    (5, ValueError, "scale must be between"),
    (math.nan, ValueError, "scale must be between"),
    ("big", TypeError, "scale must be a number"),
    (True, TypeError, "scale must be a number"),
])
def test_style_refuses_bad_scales_and_keeps_the_setting(bad, error, match):
    style(scale=1.5)
    with pytest.raises(error, match=match):
        style(scale=bad)
    assert style() == {"scale": 1.5}


def test_font_scale_range_is_checked_on_views():
    lo, hi = FONT_SCALE_RANGE
    view = FilterGrid(tiny())
    with pytest.raises(ValueError, match="font_scale must be between"):
        view.font_scale = hi * 2
    with pytest.raises(ValueError, match="font_scale"):
        FilterGrid(tiny(), font_scale=lo / 2)


def test_attribution_view_scales_its_canvas_and_its_chart():
    style(scale=1.5)
    view = AttributionView(tiny(), image(0))
    view.wait(60)
    assert view.font_scale == 1.5 and view._canvas.font_scale == 1.5
    ticks = [font_px(axis.tick_style) for axis in view._figure.axes]
    assert ticks == [18.0, 18.0]
    assert font_px(view._bars.label_font_style) == 18.0
    assert font_px(view._figure.title_style) == pytest.approx(19.5)
    wide = int(view._figure.layout.width.removesuffix("px"))
    tall = int(view._figure.layout.height.removesuffix("px"))
    style(scale=1.0)
    assert view._canvas.font_scale == 1.0
    assert [font_px(axis.tick_style) for axis in view._figure.axes] == [12.0, 12.0]
    assert font_px(view._bars.label_font_style) == 12.0
    # the chart grows with its text, so the labels keep their room
    assert int(view._figure.layout.width.removesuffix("px")) == round(wide / 1.5)
    assert int(view._figure.layout.height.removesuffix("px")) == round(tall / 1.5)
    view.font_scale = 2.0  # a view's own scale reaches its parts too
    assert view._canvas.font_scale == 2.0 and font_px(view._bars.label_font_style) == 24.0
    style(scale=1.25)
    assert view.font_scale == 2.0


def test_compare_takes_font_scale_and_defaults_to_one_scale_per_method():
    model = tiny()
    style(scale=1.5)
    grid = compare(model, [image(0), image(1)], ["saliency"])
    own = compare(model, [image(0), image(1)], ["saliency"], font_scale=2.0)
    assert grid.scale == "per-method" and grid.font_scale == 1.5 and own.font_scale == 2.0
    style(scale=1.0)
    assert (grid.font_scale, own.font_scale) == (1.0, 2.0)
    with pytest.raises(ValueError, match="font_scale must be between"):
        compare(model, [image(0)], ["saliency"], font_scale=9)
    with pytest.raises(TypeError, match="font_scale must be a number"):
        compare(model, [image(0)], ["saliency"], font_scale="large")
    grid.wait(60)
    own.wait(60)


def test_every_option_has_a_human_label_and_keeps_its_captum_name():
    for method in METHODS.values():
        for option in method.options:
            assert option.label.strip(), f"{method.name}.{option.name} has no label"
            assert "_" not in option.label, f"{method.name}.{option.name}: {option.label!r} is a code name"
            entry = option.to_json()
            assert entry["label"] == option.label and entry["name"] == option.name
    smoothgrad = {o.name: o.label for o in METHODS["smoothgrad"].options}
    assert smoothgrad["nt_samples"] == "samples" and smoothgrad["stdevs"] == "noise level"
    assert {o.name: o.label for o in METHODS["occlusion"].options}["sliding_window_shapes"] == "window size"


def test_scale_chart_scales_ticks_and_title_and_keeps_other_styles():
    x = LinearScale()
    fig = Figure(axes=[Axis(scale=x, tick_style={"fill": "red"}), Axis(scale=x, orientation="vertical")],
                 title="t", title_style={"font-weight": "bold"})
    scale_chart(fig, 2.0)
    assert [a.tick_style for a in fig.axes] == [{"fill": "red", "font-size": "24px"}, {"font-size": "24px"}]
    assert fig.title_style["font-size"] == "26px" and fig.title_style["font-weight"] == "bold"
    assert fig.title_style["fill"].startswith("var(--jp-ui-font-color1")  # the theme's text colour
    scale_chart(fig, 1.0)
    assert [font_px(a.tick_style) for a in fig.axes] == [12.0, 12.0] and font_px(fig.title_style) == 13.0


def test_every_view_with_a_bqplot_chart_scales_its_chart_text():
    """Metrics' curve charts and ChannelImportance's bars follow font_scale like AttributionView's."""
    from cnn_widgets import ChannelImportance, Metrics, zoo

    model = zoo.load_shapesnet()
    images, labels, _ = zoo.shapes_dataset(4, seed=5)
    metrics = Metrics(model, images[:1], ["saliency"], sample=0, steps=4, font_scale=1.5)
    importance = ChannelImportance(model, (images, labels), "features.conv4", repeats=1, font_scale=1.5)
    try:
        figures = [*metrics._figures, importance._figure]
        for figure in figures:
            assert all(axis.tick_style["font-size"] == "18px" for axis in figure.axes)
        metrics.font_scale = importance.font_scale = 1.0
        for figure in figures:
            assert all(axis.tick_style["font-size"] == "12px" for axis in figure.axes)
    finally:
        for view in (metrics, importance):
            view.wait(60)
            view.close()
