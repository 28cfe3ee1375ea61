"""How a control family runs on a MODEL: one binder per family, one :func:`bind` for the Apply node."""
from .binding import FamilyBinding
from .registry import BINDERS, bind

__all__ = ["BINDERS", "FamilyBinding", "bind"]
