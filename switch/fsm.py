"""What the engine's state machines share.

``FastEnum`` is the base of the state and input enums that key the
transition tables (``TRANSITIONS[(state, input)]``).  ``Enum.__hash__`` is a
Python function (``hash(self._name_)``) run twice per table lookup, a few
dozen times per call; enum members are singletons compared by identity, so
the C-level identity hash is equivalent and a lookup costs a third.  Not for
``StrEnum``/``IntEnum``, whose hash must equal their value's.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["FastEnum"]


class FastEnum(Enum):
    """An ``Enum`` hashed by identity (members are singletons)."""

    __hash__ = object.__hash__
