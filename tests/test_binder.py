"""Binder's install, rehearsed: a fresh virtual environment gets only ``binder/requirements.txt``
(run from the repository root, as repo2docker does) and then runs the quickstart.

A Binder build itself cannot run here (no docker engine). Binder's base image brings Jupyter;
here ``nbclient`` and ``ipykernel`` stand in for it and are the only extra packages.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_binder_files_follow_repo2docker():
    requirements = (ROOT / "binder" / "requirements.txt").read_text().split()
    assert any(r == "." or r.startswith(".[") for r in requirements), "binder must install the package itself"
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = ROOT / "binder" / "postBuild"
    if post_build.exists():
        assert post_build.read_text().startswith("#!") and "set -e" in post_build.read_text()


@pytest.mark.slow
def test_quickstart_runs_in_a_fresh_environment_from_binder_requirements(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", "binder/requirements.txt"], cwd=ROOT, check=True, timeout=1200)
    subprocess.run([*pip, "nbclient", "ipykernel"], cwd=ROOT, check=True, timeout=600)
    script = textwrap.dedent(
        f"""
        import nbformat, cnnvis_widgets
        from nbclient import NotebookClient
        assert cnnvis_widgets.__file__.startswith({str(ROOT)!r}) or "site-packages" in cnnvis_widgets.__file__
        nb = nbformat.read({str(ROOT / "notebooks" / "01_quickstart.ipynb")!r}, as_version=4)
        NotebookClient(nb, timeout=900, kernel_name="python3").execute()
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
        widgets = [o for c in nb.cells for o in c.get("outputs", [])
                   if "application/vnd.jupyter.widget-view+json" in o.get("data", {{}})]
        print("QUICKSTART_OK", len(widgets), "widget outputs")
        """
    )
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "CNNVIS_FAST": "1"}
    # the suite's compiled programs, if it keeps them: the environment is fresh, the compiles need not be
    env.update({k: os.environ[k] for k in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME") if k in os.environ})
    out = subprocess.run(
        [str(py), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "QUICKSTART_OK" in out.stdout and " 0 widget outputs" not in out.stdout, out.stdout
