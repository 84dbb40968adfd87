"""viser, the optional dependency of the viewer, imported with a one-line message when it is missing."""

from __future__ import annotations

from types import ModuleType

from distill3d.errors import UserError

INSTALL_HINT = "the viewer needs viser: install the viewer extra: pip install -e '.[viewer]'"


def require_viser() -> ModuleType:
    """The ``viser`` module, or a ``UserError`` telling how to install it."""
    try:
        import viser
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return viser
