"""Figures 5-7 and 12-13: learned representations w̃_j = |a_j| w_j over a range of hyperbolic-entropy β and of
smoothed-p = 3 λ, and the same runs trained ten times longer (t → 10 t, log t + ln 10)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import _draw
from ._base import FigureResult, StudentTeacher2D, cosine, pot_label, register, save

LOG_T = 12.0
LONGER = math.log(10.0)  # "ten times longer": t → 10 t


def _family_runs(st: StudentTeacher2D, pots: list[dict], n_save: int) -> tuple[dict[str, Any], dict[str, list]]:
    """Run every potential to log t = 12 + ln 10, reading the state at log t = 12 and at the end."""
    grid = np.concatenate([np.linspace(-3.0, LOG_T, n_save), [LOG_T + LONGER]])
    k = n_save  # index of log t = 12 (t = 0 is prepended at index 0)
    runs, panels = {}, {"t": [], "10t": []}
    gf = st.run({"name": "euclidean"}, None, save_log_t=grid)
    for pot in [{"name": "euclidean"}, *pots]:
        tr = gf if pot["name"] == "euclidean" else st.run(pot, None, save_log_t=grid)
        label = pot_label(pot)
        wt, sign = st.effective(tr.theta[k])
        wt10, sign10 = st.effective(tr.theta[-1])
        act = np.asarray(tr.diagnostics["active_neurons"])
        runs[label] = {
            "potential": pot,
            "status": tr.status.value,
            "active_neurons": int(act[k]),
            "active_neurons_10t": int(act[-1]),
            "cosine_to_gf": cosine(tr.theta[k], gf.theta[k]),
            "cosine_t_vs_10t": cosine(wt, wt10),
            "normalized_margin": float(tr.diagnostics["normalized_margin"][k]),
            "normalized_margin_10t": float(tr.diagnostics["normalized_margin"][-1]),
        }
        panels["t"].append({"wt": wt, "sign": sign, "title": f"{label}: {int(act[k])} active"})
        panels["10t"].append({"wt": wt10, "sign": sign10, "title": f"{label}, 10× longer: {int(act[-1])} active"})
    return runs, panels


def _family_figure(name: str, st: StudentTeacher2D, pots: list[dict], quick: bool, out: Path, pngs: list[str]):
    runs, panels = _family_runs(st, pots, 10 if quick else 40)
    W, a = st.teacher_W, st.teacher_a
    save(lambda plt: _draw.representation_panels(plt, panels["t"], W, a), out, f"{name}.png", pngs)
    save(lambda plt: _draw.representation_panels(plt, panels["10t"], W, a), out, f"{name}_10x.png", pngs)
    return runs


def _betas(quick: bool) -> list[float]:
    return [0.01, 1.0] if quick else [0.001, 0.01, 0.1, 1.0, 10.0]


def _lambdas(quick: bool) -> list[float]:
    return [0.01, 100.0] if quick else [0.01, 0.1, 1.0, 10.0, 100.0]


def _beta_and_lambda(st: StudentTeacher2D, names: tuple[str, str], quick: bool, out: Path):
    """The β family (hyperbolic entropy) and the λ family (smoothed p = 3) on ``st``, drawn as ``names``:
    (PNG names, β runs, λ runs, the figure's numbers)."""
    pngs: list[str] = []
    he = _family_figure(names[0], st, [{"name": "hyperbolic_entropy", "beta": b} for b in _betas(quick)], quick,
                        out, pngs)  # fmt: skip
    pots = [{"name": "smoothed_homogeneous", "p": 3.0, "lam": v} for v in _lambdas(quick)]
    sm = _family_figure(names[1], st, pots, quick, out, pngs)
    numbers = {"log_t": LOG_T, "log_t_10x": LOG_T + LONGER, "width": st.width, "beta_runs": he, "lambda_runs": sm}
    return pngs, he, sm, numbers


def _lines(st: StudentTeacher2D, he: dict, sm: dict) -> list[str]:
    fmt = ", ".join
    return [
        f"2-D student–teacher (n = {st.n}, teacher width {st.teacher_width}, data seed {st.data_seed}), "
        f"student width {st.width}, w̃ at log t = {LOG_T:g} and at t ten times longer (log t + ln 10)",
        "active neurons over β (HE): " + fmt(f"{k} {v['active_neurons']}" for k, v in he.items()),
        "cosine to gradient flow over λ (smoothed p = 3): "
        + fmt(f"{k} {v['cosine_to_gf']:.4f}" for k, v in sm.items() if k != "gradient flow"),
        "ten times longer, cos(w̃(t), w̃(10t)) ≥ "
        + f"{min(v['cosine_t_vs_10t'] for v in [*he.values(), *sm.values()]):.4f}; active neurons at 10 t: "
        + fmt(f"{k} {v['active_neurons_10t']}" for k, v in {**he, **sm}.items()),
    ]


@register(
    "fig5-7",
    "w̃ over hyperbolic-entropy β (fig5) and smoothed-p = 3 λ (fig6); the same trained ten times longer (fig7)",
    aliases=("fig5", "fig6", "fig7"),
)
def fig5_7(quick: bool, out: Path) -> FigureResult:
    """Figs. 5-7 on fig2's problem: fig5.png (β), fig6.png (λ), fig5_10x.png / fig6_10x.png (fig 7)."""
    st = StudentTeacher2D()
    pngs, he, sm, numbers = _beta_and_lambda(st, ("fig5", "fig6"), quick, out)
    note = (
        "β and λ ranges, the set-up (fig2's) and 'ten times longer' read as t → 10 t are chosen here from the "
        "captions' wording; fig7 is drawn as fig5_10x.png and fig6_10x.png"
    )
    return FigureResult("fig5-7", "representations over β and λ, and ten times longer", numbers, _lines(st, he, sm),
                        note, pngs)  # fmt: skip


@register(
    "fig12-13",
    "appendix: w̃ over β (fig12) and λ (fig13) on a second student–teacher draw (data seed 3, n = 24)",
    aliases=("fig12", "fig13"),
)
def fig12_13(quick: bool, out: Path) -> FigureResult:
    """Figs. 12-13: figs 5-6 on another data draw (data seed 3, n = 24)."""
    st = StudentTeacher2D(n=24, data_seed=3)
    pngs, he, sm, numbers = _beta_and_lambda(st, ("fig12", "fig13"), quick, out)
    note = (
        "the appendix figures are read as figs 5-6 repeated on other data; the second draw (data seed 3, n = 24) is "
        "chosen here"
    )
    return FigureResult("fig12-13", "appendix: representations over β and λ on other data", numbers,
                        _lines(st, he, sm), note, pngs)  # fmt: skip
