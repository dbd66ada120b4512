"""The pytest plugin of the fake Avatario (registered as ``avatario`` through ``pytest11``).

Loaded by pytest wherever avatario-wrapper is installed, so importing it costs nothing and
needs nothing beyond the core install; its fixtures import the fake (the ``server`` extra)
only when a test asks for one.
"""

from __future__ import annotations
