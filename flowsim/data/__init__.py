"""Binary data sets (x_i, y_i): the Dataset type, synthetic generators, CSV/NPZ files, bundled real data."""

from ._impl import *  # noqa: F401,F403
from ._impl import __all__  # noqa: F401
