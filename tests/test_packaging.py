"""What users install: wheels and sdists built from a clean checkout carry the JavaScript bundle (built by
the hatch hook in js/hatch_build.py), building without Node fails with instructions instead of producing
a wheel whose widgets cannot render, the licence ships, and the quickstart notebook is clean (no stored
outputs, no undeclared imports)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDGETS = REPO / "cnn_widgets" / "widgets"
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
# The bundle names the widgets load: every ``bundle("<name>")`` in cnn_widgets/widgets/.
BUNDLES = sorted({m for p in WIDGETS.glob("*.py") for m in re.findall(r'\bbundle\("(\w+)"\)', p.read_text())})
# A venv's bin directory holds python and pip but no node or npm: PATH for "Node is not installed".
NO_NODE_PATH = str(Path(sys.executable).parent)
HOW_TO_BUILD = "cd js && npm ci && npm run build"

needs_git = pytest.mark.skipif(not (REPO / ".git").exists() or not shutil.which("git"),
                               reason="builds from the git checkout's file list")
needs_node = pytest.mark.skipif(not shutil.which("npm") or not shutil.which("node"), reason="needs Node.js")


def test_every_widget_has_a_bundle_name() -> None:
    assert set(BUNDLES) >= {"activation_browser", "filter_grid", "attribution_view", "compare"}, BUNDLES
    entries = {p.stem for p in (REPO / "js" / "src" / "widgets").glob("*.js")}
    assert set(BUNDLES) <= entries, f"no esbuild entry in js/src/widgets for {set(BUNDLES) - entries}"


def clean_checkout(dest: Path, *, node_modules: bool = True) -> Path:
    """The files a clean clone would have (tracked or not ignored), copied with their mtimes into ``dest``;
    the generated bundle is git-ignored and so absent. ``js/node_modules`` is copied (not linked: ``npm ci``
    would empty the original) when the repo has one, to spare the hook a network ``npm ci``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    assert not list((dest / "cnn_widgets" / "static").glob("*.js")), "the bundle must be git-ignored"
    modules = REPO / "js" / "node_modules"
    if node_modules and (modules / ".package-lock.json").is_file():
        shutil.copytree(modules, dest / "js" / "node_modules", symlinks=True)
    return dest


def pip_wheel(src: Path, out: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1")
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        capture_output=True, text=True, env=env, timeout=300,
    )


def check_bundles(names: list[str], read: Callable[[str], bytes], where: str) -> None:
    for name in BUNDLES:
        path = f"cnn_widgets/static/{name}.js"
        assert path in names, f"{path} is missing from {where}: {sorted(n for n in names if 'static' in n)}"
        code = read(path)
        # a real esbuild ES module, not the "bundle is missing" placeholder or an empty file
        assert len(code) > 5000 and b"export" in code and b"render" in code, (path, len(code), code[:200])


@needs_git
@needs_node
def test_wheel_from_a_clean_checkout_contains_every_bundle(tmp_path: Path) -> None:
    src = clean_checkout(tmp_path / "src")
    done = pip_wheel(src, tmp_path / "dist")
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("cnn_widgets-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        check_bundles(names, zf.read, wheel.name)
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(metadata).decode()
        assert "License-Expression: BSD-3-Clause" in meta and "License-File: LICENSE" in meta, meta[:800]
        assert "cnn_widgets/zoo/weights/shapesnet_clean.pt" in names
        assert not [n for n in names if n.startswith(("js/", "tests/", "notebooks/"))]
        assert not [n for n in names if n.endswith("bundle.sha256")]


@needs_git
def test_without_node_a_missing_bundle_stops_the_build_with_instructions(tmp_path: Path) -> None:
    assert shutil.which("npm", path=NO_NODE_PATH) is None and shutil.which("node", path=NO_NODE_PATH) is None
    src = clean_checkout(tmp_path / "src", node_modules=False)
    done = pip_wheel(src, tmp_path / "dist", path=NO_NODE_PATH)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert not list((tmp_path / "dist").glob("*.whl")), "a wheel without the bundle was written"
    assert "JavaScript bundle is not ready" in output and "not found on PATH" in output, output[-3000:]
    assert HOW_TO_BUILD in output and "Node.js >= 18" in output, output[-3000:]


@needs_git
@needs_node
def test_sdist_carries_the_bundle_and_builds_a_wheel_without_node(tmp_path: Path) -> None:
    src = clean_checkout(tmp_path / "src")
    sdist_dir = tmp_path / "sdist"
    made = subprocess.run(
        [sys.executable, "-c", "import sys; from hatchling.build import build_sdist; print(build_sdist(sys.argv[1]))",
         str(sdist_dir)],
        cwd=src, capture_output=True, text=True, timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (sdist,) = sdist_dir.glob("cnn_widgets-*.tar.gz")
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1]: m for m in tf.getmembers() if "/" in m.name}
        check_bundles(list(members), lambda n: tf.extractfile(members[n]).read(), sdist.name)
        for needed in ("LICENSE", "js/hatch_build.py", "js/package-lock.json", "js/build.mjs",
                       "cnn_widgets/static/bundle.sha256"):
            assert needed in members, f"{needed} is missing from {sdist.name}"
        assert not [n for n in members if "node_modules" in n or n.startswith(".venv")]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(tmp_path / "unpacked", **safe)
    (unpacked,) = (tmp_path / "unpacked").iterdir()

    # The stamp vouches for the shipped bundle whatever the extraction's mtimes: no Node needed.
    for p in (unpacked / "js" / "src").rglob("*.js"):
        p.touch()
    done = pip_wheel(unpacked, tmp_path / "dist", path=NO_NODE_PATH)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("cnn_widgets-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        check_bundles(zf.namelist(), zf.read, wheel.name)

    # A changed source makes the shipped bundle stale: without Node that is an error, not an old bundle.
    grid = unpacked / "js" / "src" / "grid.js"
    grid.write_text(grid.read_text() + "\n// changed\n")
    shutil.rmtree(tmp_path / "dist")
    done = pip_wheel(unpacked, tmp_path / "dist", path=NO_NODE_PATH)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "changed since the last build" in output, output[-3000:]
    assert HOW_TO_BUILD in output


def code_cells() -> list[dict]:
    nb = json.loads(QUICKSTART.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_quickstart_is_stored_without_outputs() -> None:
    cells = code_cells()
    assert cells
    dirty = [i for i, c in enumerate(cells) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"code cells {dirty} of {QUICKSTART.name} have stored outputs or execution counts"


def test_quickstart_imports_only_declared_packages() -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = {
        re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")
        for req in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    providers = packages_distributions()
    imported: set[str] = set()
    for cell in code_cells():
        source = "".join(cell["source"])
        tree = ast.parse("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    assert "cnn_widgets" in imported
    undeclared = {
        name for name in imported - {"cnn_widgets"} - set(sys.stdlib_module_names)
        if not {d.lower().replace("_", "-") for d in providers.get(name, [])} & declared
    }
    assert not undeclared, f"{QUICKSTART.name} imports {undeclared}, which pyproject.toml does not declare"
