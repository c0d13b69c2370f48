"""The README's first session, run verbatim with relative paths, as a newcomer types it.

The commands run with a scratch folder as the working directory, which stands for the
repository root: ``.venv`` there links to the virtual environment running the tests, so
``.venv/bin/deploykit`` resolves exactly as in a checkout, while the outputs (``models/``,
``bundles/``, ``pkg/``, ``whatif-iris/``) do not touch a developer's checkout. Relative paths
crossing into other processes (converter workers, the Node runner, device runners) is the
bug class this guards against: every test elsewhere uses absolute temporary paths.

Each command must exit 0 and print no traceback and no framework chatter (the same patterns
``../shared/tools/newcomer-check`` flags). The what-if line is the short what-if run whose
terminal the issue asks to be quiet.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from shared import CHATTER, free_port

pytestmark = pytest.mark.slow  # runs the README session (trains, exports, serves)

ROOT = Path(__file__).resolve().parents[1]


def readme_session() -> list[str]:
    """The first code block of the README's "Use" section, one command per line."""
    text = (ROOT / "README.md").read_text()
    use = text[text.index("\n## Use\n"):]
    block = use[use.index("```\n") + 4:]
    return [ln for ln in block[:block.index("```")].splitlines() if ln.strip()]



@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkout")
    (root / ".venv").symlink_to(Path(sys.executable).parents[1], target_is_directory=True)
    return root


def _quiet(name: str, out: str) -> None:
    noisy = CHATTER.findall(out)
    assert not noisy, f"{name} printed framework chatter {noisy[:3]}:\n{out[-3000:]}"


def test_every_command_runs_verbatim_from_the_root(root):
    commands = readme_session()
    assert len(commands) >= 8 and all(c.startswith(".venv/bin/") for c in commands)
    assert not [c for c in commands if " /" in c], "the session must use relative paths"
    for command in commands:
        if " serve " in command:
            _serve(root, command)
            continue
        r = subprocess.run(command, shell=True, cwd=root, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        _quiet(command, r.stdout + r.stderr)
    report = json.loads((root / "whatif-iris" / "report.json").read_text())
    cells = {(row["flow"], c["target"]): c for row in report["rows"] for c in row["cells"]}
    for path_target in [("keras-torch", "tfjs"), ("keras-torch", "onnx-web"),
                        ("sklearn", "onnx-web"), ("keras-torch", "tflite")]:
        assert cells[path_target]["status"] == "pass", cells[path_target]["reason"]
    assert all(c["status"] in ("pass", "n/a") for c in cells.values())
    logs = list((root / "whatif-iris" / "logs").glob("what-if-*.log"))
    assert logs and CHATTER.search(logs[0].read_text())  # the chatter went to the run log
    manifest = json.loads((root / "bundles" / "digits-torch" / "manifest.json").read_text())
    assert {a["target"] for a in manifest["artifacts"]} == {"onnx", "tflite", "executorch",
                                                            "onnx-web"}
    assert all(a["parity"]["passed"] for a in manifest["artifacts"]) and not manifest["failed"]


def _serve(root: Path, command: str) -> None:
    port = free_port()
    argv = shlex.split(re.sub(r"--port \d+", f"--port {port}", command))
    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if requests.get(url + "/v2/health/ready", timeout=5).ok:
                    break
            except requests.RequestException:  # not listening yet, or workers still booting
                time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        row = [[float(v % 17) for v in range(64)]]
        r = requests.post(url + "/predict?model=digits-torch", json={"instances": row},
                          timeout=30)
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 1 and r.json()["labels"][0] in "0123456789"
        for name in ("digits-torch", "digits-pt2"):  # a bare .pt2: named after its bundle
            v = requests.post(f"{url}/validate?model={name}", timeout=120)
            assert v.status_code == 200 and v.json()["passed"], v.text
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    _quiet(command, out + err)
