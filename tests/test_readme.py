"""The README's Python tour runs as written (every block but the widget and your-own-model ones)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_tour_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the tour writes conv4.png
    namespace: dict = {}
    runnable = [b for b in blocks if "FilterExplorer" not in b and "MyLinenCNN" not in b]
    assert len(runnable) == 2
    for block in runnable:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "conv4.png").stat().st_size > 1000
    assert namespace["result"].images.shape == (16, 32, 32, 1)


def test_readme_links_every_notebook_and_binder_points_at_the_repository():
    import tomllib

    text = README.read_text()
    root = README.parent
    notebooks = sorted(p.name for p in (root / "notebooks").glob("*.ipynb"))
    linked = re.findall(r"\]\((notebooks/[^)]+\.ipynb)\)", text)
    assert sorted(Path(n).name for n in linked) == notebooks
    assert all((root / n).exists() for n in linked)
    repo = tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    badge = re.search(r"mybinder\.org/v2/gh/([^/]+/[^/]+)/main\?urlpath=lab/tree/(\S+?)\)", text)
    assert badge and repo.endswith(badge.group(1)) and (root / badge.group(2)).exists()
    for figure in re.findall(r"!\[[^]]*\]\((docs/[^)]+)\)", text):
        assert (root / figure).exists(), figure
