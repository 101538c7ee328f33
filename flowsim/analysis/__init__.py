"""What makes theorems checkable: diagnostics along a trajectory, rate fits, reference max-margin solutions,
weights of trained networks (histograms, sparsity, dead units, pruning)."""

from . import diagnostics, multiclass, rates, references, weights

__all__ = ["diagnostics", "multiclass", "rates", "references", "weights"]
