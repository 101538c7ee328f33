"""What makes theorems checkable: diagnostics along a trajectory, rate fits, reference max-margin solutions."""

from . import diagnostics, rates, references

__all__ = ["diagnostics", "rates", "references"]
