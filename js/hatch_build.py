"""Hatch build hook: every wheel and sdist ships the esbuild bundle ``cnn_widgets/static/<widget>.js``.

The bundle is generated (git-ignored), so a clean clone has none. Before hatchling collects the files of a
wheel or an sdist this hook checks that there is one bundle per entry in ``js/src/widgets/`` and that it
was built from the current sources; if not, it runs ``npm ci`` (only when ``js/node_modules`` is missing
or older than the lock file) and ``npm run build`` in ``js/``. Without Node.js ≥ 18 it stops the build with
a message saying how to build the bundle, instead of producing a wheel whose widgets cannot render.

"Current" means: the stamp ``cnn_widgets/static/bundle.sha256`` written after our last build names these
exact inputs and bundles, or, without a stamp (a bundle made by ``make js``), no input is newer than the
oldest bundle. The sdist carries bundle and stamp, so building a wheel from it needs no Node.
Editable installs read the bundle from the source tree and skip all this (``make js`` builds it there).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MIN_NODE = 18
STAMP = "bundle.sha256"


def _inputs(js: Path) -> list[Path]:
    """Every file the bundle is made from, in a fixed order."""
    files = [js / "package.json", js / "package-lock.json", js / "build.mjs"]
    files += sorted(p for p in (js / "src").rglob("*") if p.is_file())
    files.append(js.parent / "cnn_widgets" / "colormaps.json")  # the colour tables colormap.js imports
    return [p for p in files if p.is_file()]


def _sha256(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


class BundleBuildHook(BuildHookInterface):
    """Builds (or insists on) the front-end bundle before a wheel or sdist is assembled."""

    def _paths(self) -> tuple[Path, Path, list[Path]]:
        root = Path(self.root)
        js = root / "js"
        static = root / "cnn_widgets" / "static"
        names = sorted(p.stem for p in (js / "src" / "widgets").glob("*.js"))
        if not names:
            raise RuntimeError(f"cnn_widgets build: no widget entry points in {js / 'src' / 'widgets'}")
        return js, static, [static / f"{n}.js" for n in names]

    def _stamp(self, js: Path, bundles: list[Path]) -> dict[str, Any]:
        root = js.parent
        return {"inputs": _sha256(_inputs(js), root),
                "bundles": {b.name: _sha256([b], root) for b in bundles}}

    def _is_current(self, js: Path, static: Path, bundles: list[Path]) -> tuple[bool, str]:
        missing = [b.name for b in bundles if not b.is_file() or b.stat().st_size == 0]
        if missing:
            return False, f"missing: {', '.join(missing)}"
        stamp = static / STAMP
        if stamp.is_file():
            try:
                recorded = json.loads(stamp.read_text())
            except ValueError:
                recorded = None
            if recorded == self._stamp(js, bundles):
                return True, "matches its build stamp"
            return False, "js/ sources or bundles changed since the last build"
        oldest = min(b.stat().st_mtime for b in bundles)
        newer = [p.relative_to(js.parent).as_posix() for p in _inputs(js) if p.stat().st_mtime > oldest]
        if newer:
            return False, f"older than {', '.join(newer[:3])}{' …' if len(newer) > 3 else ''}"
        return True, "newer than every input"

    def _fail(self, reason: str, bundles: list[Path], *, need_node: bool = True) -> None:
        names = ", ".join(f"cnn_widgets/static/{b.name}" for b in bundles)
        how = (
            f"Install Node.js >= {MIN_NODE} with npm (Debian: `apt-get install nodejs npm`) and build again\n"
            "(this hook then runs `npm ci` and `npm run build` in js/), or build the bundle yourself first:\n"
            if need_node else
            "See npm's output above. Fix the cause and build again, or build the bundle yourself first:\n"
        )
        raise RuntimeError(
            f"\ncnn_widgets build: the JavaScript bundle is not ready ({reason}).\n"
            f"The widgets need {names}, built from js/src by esbuild.\n"
            f"{how}"
            "    cd js && npm ci && npm run build      (or: make js)\n"
        )

    def _run(self, cmd: list[str], cwd: Path, bundles: list[Path]) -> None:
        self.app.display_info(f"cnn_widgets build: {' '.join(cmd)} (in js/)")
        # npm's output goes to stderr so it never mixes into a PEP 517 backend's stdout protocol.
        done = subprocess.run(cmd, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if done.returncode != 0:
            self._fail(f"`{' '.join(cmd)}` exited with {done.returncode}", bundles, need_node=False)

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        js, static, bundles = self._paths()
        current, why = self._is_current(js, static, bundles)
        if current:
            self.app.display_info(f"cnn_widgets build: JavaScript bundle up to date ({why})")
            return
        self.app.display_info(f"cnn_widgets build: JavaScript bundle needs building ({why})")
        npm, node = shutil.which("npm"), shutil.which("node")
        if not npm or not node:
            self._fail(f"{why}; `node`/`npm` not found on PATH", bundles)
        out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
        match = re.match(r"v(\d+)", out.strip())
        if not match or int(match.group(1)) < MIN_NODE:
            self._fail(f"{why}; node {out.strip() or '?'} is older than {MIN_NODE}", bundles)
        lock, installed = js / "package-lock.json", js / "node_modules" / ".package-lock.json"
        if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
            self._run([npm, "ci", "--no-audit", "--no-fund"], js, bundles)
        self._run([npm, "run", "build"], js, bundles)
        missing = [b.name for b in bundles if not b.is_file() or b.stat().st_size == 0]
        if missing:
            self._fail(f"`npm run build` did not write {', '.join(missing)}", bundles, need_node=False)
        (static / STAMP).write_text(json.dumps(self._stamp(js, bundles), indent=1, sort_keys=True) + "\n")
