"""One conversion of flowsim's values (numpy, torch, enums, non-finite floats) to plain JSON types."""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np
from torch import Tensor


def jsonable(obj: Any) -> Any:
    """``obj`` with mappings, tuples, numpy and torch values turned into plain Python for :func:`json.dumps`.

    Arrays become (nested) lists of Python scalars, enums their values, and a non-finite Python float its
    string ("inf", "nan"), which JSON cannot hold portably.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj
