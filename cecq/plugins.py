"""Extension modules: kinds of quantizer or encoder that live outside cecq.

A plugin is a module that registers its kinds when imported (``register_quantizer``,
``register_encoder``). cecq imports, once and on the first registry lookup, the modules of
the installed ``cecq.plugins`` entry points and those named in ``CECQ_PLUGINS``
(comma-separated module names). The variable is read in every process, Ray workers
included, so a plugin's kinds resolve wherever a quantizer file or a model is loaded.
"""

from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points

logger = logging.getLogger(__name__)

ENV_VAR = "CECQ_PLUGINS"
ENTRY_POINT_GROUP = "cecq.plugins"
_loaded: set[str] = set()


def load_plugins() -> list[str]:
    """Import every plugin module not imported yet; return the names imported now."""
    names = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    names += [n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()]
    new = [n for n in dict.fromkeys(names) if n not in _loaded]
    for name in new:
        _loaded.add(name)
        importlib.import_module(name)
        logger.info("cecq plugin %s loaded", name)
    return new
