"""Results of a run: the Trajectory, its on-disk store (streamed rows, checkpoints) and resume."""

from .trajectory import FORMAT_VERSION, Status, Trajectory, environment_metadata

__all__ = ["Trajectory", "Status", "environment_metadata", "FORMAT_VERSION"]
