"""Figures of :mod:`flowsim.lab.plotting` with one line per run: few runs keep a legend in each panel, a sweep's
32 runs one legend in columns under the panels, very many a colour bar; the layout never collapses."""

from __future__ import annotations

import itertools
import warnings

import pytest

from flowsim import simulate
from flowsim.data import load_dataset, student_teacher_relu
from flowsim.lab import plotting
from flowsim.models import Linear, TwoLayerReLU


@pytest.fixture(scope="module")
def linear_run():
    data = load_dataset("iris", a=0, b=1)
    return simulate(Linear(data.d), data, "euclidean", log_t_end=2.0, n_save=12)


@pytest.fixture(scope="module")
def network_run():
    data = student_teacher_relu(n=12, d=3, seed=0)
    return simulate(TwoLayerReLU(3, 4), data, "euclidean", log_t_end=1.0, n_save=8, init_scale=0.5)


def _sweep_labels(n: int) -> list[str]:
    """Labels as docs/sweeps.md's example sweep gives them (2 widths × 2 sizes × 4 β × 2 seeds = 32)."""
    combos = itertools.product([4, 8], [12, 48], [0.05, 0.1, 0.5, 1.0], range(n))
    return [f"width={w} n={k} hyperbolic_entropy(beta={b}) seed={s}" for w, k, b, s in combos][:n]


def _draw(plot, labels, run):
    """The figure of ``plot`` for ``labels`` (each the same run), laid out, and the warnings drawing it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plot(labels, [run] * len(labels), None)
        fig.canvas.draw()  # (constrained layout runs here)
    return fig, [str(w.message) for w in caught]


@pytest.mark.parametrize("n_runs", [3, 32, 60])
@pytest.mark.parametrize("name", ["plot_margins", "plot_loss", "plot_neuron_masses"])
def test_many_runs_give_a_readable_figure(linear_run, network_run, name, n_runs):
    run = network_run if name == "plot_neuron_masses" else linear_run
    fig, caught = _draw(getattr(plotting, name), _sweep_labels(n_runs), run)
    try:
        assert not [m for m in caught if "constrained_layout" in m or "collapsed" in m], caught
        width, height = fig.get_size_inches()
        assert width <= 12 and height <= 8, (width, height)
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        for ax in panels:  # every panel keeps at least 2.5 by 2.5 inches of plotting area
            box = ax.get_position()
            assert box.width * width >= 2.5 and box.height * height >= 2.5, (box, width, height)
        inline = [ax.get_legend() for ax in panels if ax.get_legend() is not None]
        if n_runs <= plotting.INLINE_LEGEND_RUNS:
            assert len(inline) == len(panels) and not fig.legends
        elif n_runs <= plotting.LEGEND_RUNS:  # one legend under the panels naming every run, none inside
            assert not inline and len(fig.legends) == 1
            assert len(fig.legends[0].get_texts()) == n_runs and fig.legends[0]._ncols > 1
        else:
            assert not inline and not fig.legends and len(fig.axes) == len(panels) + 1  # a colour bar
    finally:
        plotting.plt.close(fig)


def test_features_of_a_sweep_show_the_first_runs(network_run, tmp_path):
    model = TwoLayerReLU(3, 4)
    path = plotting.plot_features(_sweep_labels(32), [network_run] * 32, model, tmp_path / "features.png")
    from PIL import Image

    width, height = Image.open(path).size
    assert height < 110 * (2.0 * plotting.INLINE_LEGEND_RUNS + 1.0) and width < 110 * 12
