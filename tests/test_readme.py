"""The README's Python example runs as written (documentation must not rot)."""

import re
from pathlib import Path

import numpy as np


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
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
