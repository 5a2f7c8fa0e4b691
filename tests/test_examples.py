"""The gallery (docs/examples) and its runner (docs/run_examples.py).

Fast checks read every example's source: an RST title, ``# %%`` cells, the quick
mode switch, explicit seeds, no global seeding and only public hrflow names. They
also run the runner on tiny fake examples (pass, fail, timeout). The slow test runs
the whole gallery in quick mode, as CI does with ``python docs/run_examples.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "docs" / "run_examples.py"
EXAMPLES = sorted((ROOT / "docs" / "examples").rglob("plot_*.py"))


def _load_runner():
    spec = importlib.util.spec_from_file_location("hrflow_docs_run_examples", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gallery_has_the_examples_of_the_issue():
    names = {p.stem for p in EXAMPLES}
    for key in ("velocity", "trajectories", "nfe", "density", "pipeline", "moons"):
        assert any(key in n for n in names), f"no gallery example about {key!r} in {sorted(names)}"
    assert _load_runner().find_examples() == EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_follows_the_gallery_conventions(path):
    source = path.read_text()
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=False)
    assert doc, "an RST title docstring comes first"
    lines = [line for line in doc.strip("\n").splitlines()]
    # ===== / title / ===== (sphinx-gallery's title block)
    assert set(lines[0]) == {"="} and set(lines[2]) == {"="} and lines[1].strip(), lines[:3]
    assert len(lines[0]) >= len(lines[1].rstrip()), "title overline shorter than the title"
    assert source.count("\n# %%") >= 2, "at least two '# %%' cells"
    assert 'os.environ.get("HRFLOW_QUICK"' in source, "reads the quick-mode switch"
    assert "random_state=" in source, "fixed seeds"
    for pattern in (r"torch\.manual_seed", r"np\.random\.seed", r"random\.seed\("):
        assert not re.search(pattern, source), f"global seeding: {pattern}"
    assert not re.search(r"(https?://|urlretrieve|fetch_openml|requests\.)", source), "no downloads"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrflow"):
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            for alias in node.names:
                assert not alias.name.startswith("_"), f"private name {alias.name} of {node.module}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert not (node.value.id == "hrflow" and node.attr.startswith("_")), node.attr


def _write(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(body)


def test_runner_reports_passes_failures_and_timeouts(tmp_path):
    _write(tmp_path, "plot_ok.py", "import os\nassert os.environ['HRFLOW_QUICK'] == '1'\n"
                                   "assert os.environ['MPLBACKEND']\nprint('fine')\n")
    _write(tmp_path / "sub", "plot_bad.py", "raise SystemExit('broken example')\n")
    _write(tmp_path, "plot_slow.py", "import time\ntime.sleep(30)\n")
    _write(tmp_path, "helper.py", "raise RuntimeError('not an example: never run')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HRFLOW_QUICK", "MPLBACKEND")}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--root", str(tmp_path), "--timeout", "5", "-j", "2"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 passed, 2 failed" in out
    assert re.search(r"timeout .* plot_slow\.py", out)
    assert re.search(r"failed \(exit 1\) .* sub/plot_bad\.py", out)
    assert "broken example" in out
    assert "helper.py" not in out


def test_runner_filters_and_passes(tmp_path):
    _write(tmp_path, "plot_a.py", "print('a')\n")
    _write(tmp_path, "plot_b.py", "raise SystemExit(3)\n")
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--root", str(tmp_path), "-k", "plot_a"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 0 failed" in proc.stdout
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--root", str(tmp_path), "-k", "nothing"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "no example matches" in proc.stdout


@pytest.mark.slow
def test_every_gallery_example_runs_in_quick_mode():
    """What CI runs: the whole gallery in quick mode (a few minutes on 2 cores)."""
    proc = subprocess.run(
        [sys.executable, str(RUNNER)], capture_output=True, text=True, timeout=1800, cwd=ROOT
    )
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    match = re.search(r"(\d+) passed, (\d+) failed", proc.stdout)
    assert match and int(match.group(1)) == len(EXAMPLES) and match.group(2) == "0", tail
