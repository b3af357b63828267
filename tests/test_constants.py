"""The choice lists shared with the browser: js/src/constants_data.js is what js/scripts/make_constants.py
writes from cnn_widgets/widgets/_common.py, and the widgets validate against those same lists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cnn_widgets.widgets import _common, activation_browser, compare, filter_grid

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "js" / "scripts" / "make_constants.py"
GENERATED = REPO / "js" / "src" / "constants_data.js"


def test_constants_data_js_is_up_to_date(tmp_path: Path) -> None:
    out = tmp_path / "constants_data.js"
    subprocess.run([sys.executable, str(SCRIPT), str(out)], check=True, capture_output=True, text=True)
    fresh = out.read_text(encoding="utf-8")
    assert GENERATED.read_text(encoding="utf-8") == fresh, (
        "js/src/constants_data.js is out of date; run `.venv/bin/python js/scripts/make_constants.py` "
        "and `make js`"
    )


def test_generated_lists_are_the_runtime_lists() -> None:
    text = GENERATED.read_text(encoding="utf-8")
    assert _common.JS_CONSTANTS == ("SIGNS", "ACTIVATION_SCALES", "COMPARE_SCALES", "FILTER_NORMALIZE")
    for name in _common.JS_CONSTANTS:
        values = getattr(_common, name)
        line = f"export const {name} = [{', '.join(f'{v!r}'.replace(chr(39), chr(34)) for v in values)}];"
        assert line in text, (name, line)
    # the old names still import from their modules, and are the shared lists
    assert activation_browser.SCALES is _common.ACTIVATION_SCALES
    assert compare.SCALES is _common.COMPARE_SCALES
    assert filter_grid.NORMALIZE is _common.FILTER_NORMALIZE


def test_generator_rejects_a_list_that_is_not_literal_strings(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import make_constants
    finally:
        sys.path.remove(str(SCRIPT.parent))
    ok = make_constants.constants('JS_CONSTANTS = ("A",)\nA: tuple[str, ...] = ("x", "y")\n')
    assert ok == {"A": ("x", "y")}
    with pytest.raises(TypeError, match="_common.A must be a literal tuple of str"):
        make_constants.constants('JS_CONSTANTS = ("A",)\nA = ("x", 1)\n')
    with pytest.raises(TypeError, match="_common.B"):
        make_constants.constants('JS_CONSTANTS = ("B",)\nB = tuple(sorted(("x",)))\n')


@pytest.mark.parametrize("value", _common.ACTIVATION_SCALES)
def test_every_activation_scale_is_accepted(value: str) -> None:
    trait = activation_browser.ActivationBrowser.class_traits()["scale"]
    assert tuple(trait.values) == _common.ACTIVATION_SCALES
    assert trait.validate(None, value) == value


def test_every_filter_normalize_and_compare_scale_is_accepted() -> None:
    trait = filter_grid.FilterGrid.class_traits()["normalize"]
    assert tuple(trait.values) == _common.FILTER_NORMALIZE
    check = compare.Compare._check_scale  # the validator reads nothing of the instance
    for value in _common.COMPARE_SCALES:
        assert check(None, {"value": value}) == value
    with pytest.raises(ValueError, match="scale must be one of 'shared', 'per-method', 'per-panel'"):
        check(None, {"value": "per-row"})
