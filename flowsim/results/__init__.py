"""Results of a run: the Trajectory and its Status, the Recorder of save points, the on-disk store."""

from .recorder import Recorder, SaveProgress
from .store import DEFAULT_CHECKPOINT_EVERY, STREAM_DIR, RunDirectory
from .trajectory import FORMAT_VERSION, Status, Trajectory, environment_metadata, load_streamed, run_folders

__all__ = [
    "Trajectory",
    "Status",
    "Recorder",
    "SaveProgress",
    "RunDirectory",
    "environment_metadata",
    "load_streamed",
    "run_folders",
    "FORMAT_VERSION",
    "STREAM_DIR",
    "DEFAULT_CHECKPOINT_EVERY",
]
