"""The documentation builds and stays consistent: API reference, README commands, relative links."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKDOWN_FILES = [README, ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md", *sorted(ROOT.glob("docs/*.md"))]


@pytest.mark.slow  # (15-27 s; the default suite stays under 8 minutes)
def test_api_reference_builds_from_the_docstrings(tmp_path):
    pytest.importorskip("pdoc", reason='the API reference needs pdoc: pip install -e ".[docs]"')
    out = tmp_path / "api"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build_api.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ["index", "flowsim", "flowsim/potentials", "flowsim/models", "flowsim/data", "flowsim/simulation"]:
        assert (out / f"{page}.html").is_file(), f"no API page for {page}"
    assert not (out / "flowsim" / "__main__.html").exists()
    # the subpackages' pages document the names they re-export
    assert "HyperbolicEntropy" in (out / "flowsim" / "potentials.html").read_text()
    assert "TwoLayerReLU" in (out / "flowsim" / "models.html").read_text()
    assert "def simulate(" in re.sub(r"<[^>]+>", "", (out / "flowsim" / "simulation.html").read_text())


def _ci_command() -> str:
    """The commands .ci/run runs after changing to the repository root, joined as one shell line."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cd "))
    return " && ".join(line.strip() for line in lines[start + 1 :] if line.strip() and not line.startswith("#"))


def test_readme_test_command_is_what_ci_runs():
    command = _ci_command()
    assert "pytest" in command and ".[test,docs,vision]" in command, command
    assert command in README.read_text().splitlines(), f"README.md should show the CI command:\n{command}"


def test_readme_is_a_short_front_door():
    assert len(README.read_text()) < 8000


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN_FILES])
def test_relative_links_resolve(path: Path):
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    missing = [
        t
        for t in targets
        if not re.match(r"[a-z]+:", t) and not t.startswith("#") and not (path.parent / t.split("#")[0]).exists()
    ]
    assert not missing, f"{path.name}: links to missing files {missing}"


def test_mirror_descent_page_example_runs_as_written(tmp_path, monkeypatch):
    """docs/mirror_descent.md's example (it once passed "hyperbolic_entropy" without beta, and with β = 0.05 and
    no rollback it ended `diverged` at log t 18.3 on the README's network): it reaches log t = 20, some steps rolled
    back, and the run without rollback diverges as the page says."""
    from flowsim.discrete import mirror_descent
    from flowsim.results import Status

    text = (ROOT / "docs" / "mirror_descent.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "mirror_descent.md", "exec"), ns)
    tr = ns["tr"]
    assert tr.success and tr.log_t[-1] == pytest.approx(20.0) and tr.stats["rollbacks"] > 0, tr
    plain = mirror_descent(
        ns["model"],
        ns["data"],
        {"name": "hyperbolic_entropy", "beta": 0.05},
        step_size=0.2,
        schedule="loss_normalized",
        log_t_end=20.0,
    )
    assert plain.status == Status.DIVERGED and plain.log_t[-1] < 20.0
