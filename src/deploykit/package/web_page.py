"""What a web package holds besides its artifacts: ``targets/web``'s parity page and engines,
and the browser runtimes its artifacts need, copied from the npm packages deploykit verified
them with. The package is then served as it is, from any static host, and fetches nothing
from elsewhere (a phone on a local network, a page without a CDN).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from deploykit.bundle import Bundle

# runtime -> (npm package, the files the page loads from it; the first is what it imports).
# onnxruntime-web fetches its wasm and loader from beside its module (page/app.js says so).
RUNTIMES = {
    "tfjs": ("@tensorflow/tfjs", ("dist/tf.fesm.min.js",)),
    "onnx-web": ("onnxruntime-web", ("dist/ort.wasm.min.mjs", "dist/ort-wasm-simd-threaded.mjs",
                                     "dist/ort-wasm-simd-threaded.wasm")),
}
IMPORT_MAP = re.compile(r'(<script type="importmap">\s*).*?(\s*</script>)', re.S)


def add_page(b: Bundle, runtimes: set[str], root: Path) -> dict[str, str]:
    """Write ``index.html``, ``app.js``, ``engines.mjs``, ``runtime/`` and ``probe/probe.json``
    into the package folder ``root``.

    Args:
        b: the bundle being packaged.
        runtimes: the runtimes of the packaged artifacts (``tfjs``, ``onnx-web``).
        root: the package folder being filled.

    Returns:
        The runtimes copied, as ``{npm package: version}``.

    Raises:
        MissingDependencyError: ``targets/web`` has no npm packages (says where to run
            ``npm ci``).
    """
    from deploykit.formats.web import web_dir

    web = web_dir()
    shutil.copy2(b.root / b.manifest["probe"]["json"], root / "probe" / "probe.json")
    shutil.copy2(web / "engines.mjs", root / "engines.mjs")
    shutil.copy2(web / "page" / "app.js", root / "app.js")
    (root / "runtime").mkdir()
    imports, versions = {"deploykit-engines": "./engines.mjs"}, {}
    for runtime in sorted(runtimes):
        name, files = RUNTIMES[runtime]
        npm = web / "node_modules" / name
        for f in files:
            shutil.copy2(npm / f, root / "runtime" / Path(f).name)
        imports[name] = f"./runtime/{Path(files[0]).name}"
        meta = json.loads((npm / "package.json").read_text())
        versions[name] = meta["version"]
        with (root / "runtime" / "NOTICE.txt").open("a") as notice:
            notice.write(f"{', '.join(Path(f).name for f in files)}: {name} {meta['version']}, "
                         f"{meta.get('license', 'see its package')} license "
                         f"(https://www.npmjs.com/package/{name})\n")
    (root / "index.html").write_text(_index(web / "page" / "index.html", imports))
    return versions


def _index(template: Path, imports: dict[str, str]) -> str:
    """The page's HTML with the package's import map, marked as a package's page."""
    html, n = IMPORT_MAP.subn(lambda m: m[1] + json.dumps({"imports": imports}, indent=2)
                              + m[2], template.read_text(), count=1)
    html, m = re.subn(r"<html\b", "<html data-package", html, count=1)
    if n != 1 or m != 1:
        raise RuntimeError(f"{template} lost its import map or <html> tag")
    return html
