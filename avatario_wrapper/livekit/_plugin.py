"""avatario_wrapper as a livekit-agents plugin, registered when `avatario_wrapper.livekit` is
imported (never by ``import avatario_wrapper``, which imports nothing of livekit).

Registered, a worker logs ``plugin registered`` with its name and version at start-up, its
``--log-level`` applies to our logger (``avatario_wrapper``: retries, the avatar's removal),
and a forkserver worker imports `PACKAGE` before it forks job processes, as it does every
sibling ``livekit-plugins-*``'s package.
"""

from __future__ import annotations

import logging
import threading

from livekit.agents import Plugin

from .._version import __version__

#: The plugin's name and the module a forkserver worker preloads.
PACKAGE = "avatario_wrapper.livekit"

logger: logging.Logger = logging.getLogger("avatario_wrapper")


class AvatarioPlugin(Plugin):
    """The plugin record livekit-agents keeps (``Plugin.registered_plugins``)."""

    def __init__(self) -> None:
        super().__init__(PACKAGE, __version__, PACKAGE, logger)


def register() -> None:
    """Register the plugin once. livekit-agents takes plugins on the main thread only (it
    raises elsewhere); imported on another thread, the import still works, unregistered."""
    if any(isinstance(p, AvatarioPlugin) for p in Plugin.registered_plugins):
        return
    if threading.current_thread() is not threading.main_thread():
        logging.getLogger(PACKAGE).debug(
            "avatario_wrapper.livekit imported off the main thread: not registered as a "
            "livekit-agents plugin (it registers on the main thread only)"
        )
        return
    Plugin.register_plugin(AvatarioPlugin())
