"""The README's Python example and mirror-descent command run as written (documentation must not rot)."""

import csv
import re
import shlex
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), ns)
    tr, lin, ref = ns["tr"], ns["lin"], ns["ref"]
    assert tr.success and lin.success
    assert ns["back"].status == tr.status
    # the hyperbolic-entropy linear run moves towards the ℓ1 max-margin direction
    Z = ns["data"].Z.numpy()
    w = lin.theta[-1]
    assert np.min(Z @ w) / np.abs(w).sum() > 0.5 * ref.margin


def test_readme_mirror_descent_command_reaches_the_horizon(tmp_path):
    """`flowsim run --method md ...` as the README shows it, on the default preset: every potential reaches the
    horizon (constant steps η = 0.1 ended `diverged` within 3-6 steps on all three)."""
    from flowsim.lab.cli import main

    line = next(ln for ln in README.read_text().splitlines() if ln.startswith("flowsim run --method md"))
    argv = shlex.split(line.split("#")[0])[1:]
    out = tmp_path / "md"
    assert main([*argv, "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["status"] == "success" for r in rows), rows
    assert all(float(r["final_log_t"]) == 8.0 for r in rows), rows
