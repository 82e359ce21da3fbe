"""Number and list formatting shared by the policy's reasons and error messages.

Reasons and errors are read by people (decision log, 400/429 bodies), so money and
scores are printed the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable


def usd(x: float) -> str:
    """``$0.0123`` with three significant digits; ``$0`` for nothing."""
    return f"${x:.3g}" if x else "$0"


def num(x: float) -> str:
    """A score or value: three decimals when small, four significant digits when large."""
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.4g}"


def name_list(items: Iterable[str], limit: int = 8) -> str:
    """``[a, b, … (+3)]``: at most ``limit`` names, then how many more."""
    items = list(items)
    shown = ", ".join(items[:limit])
    more = f", … (+{len(items) - limit})" if len(items) > limit else ""
    return f"[{shown}{more}]"
