"""Fine-tuning guards: publisher-side protections that change no weight but constrain what a user's fine-tuning can
change (a `FreezeMask` of UNet tensors the fine-tune must leave frozen; `erasekit.attacks.relearn` enforces one with
`freeze=PATH`). Registered lazily, as the erasers are.

    freezeasguard  FreezeAsGuard (Huang & Gao, 2024): bilevel-learned mask against illegal re-adaptation
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry

guards: Registry[Any] = Registry("guard")
guards.add("freezeasguard", "erasekit.guards.freezeasguard:METHOD",
           help="FreezeAsGuard: learn which UNet tensors to freeze so fine-tuning cannot relearn illegal concepts")

__all__ = ["guards"]
