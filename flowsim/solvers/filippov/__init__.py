"""Exact ReLU kinks: Filippov solutions by event location, switching and sliding modes."""

from ._kinks import *  # noqa: F401,F403
from ._kinks import __all__  # noqa: F401
