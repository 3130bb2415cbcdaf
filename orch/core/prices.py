"""What a usage record is on a bill: billed (uncached) input, cached input, output and its reasoning part, and
what it costs by the config's price table (`prices`, money units per 1M tokens, keyed by model, `default` for
any model it does not list). Codex counts reasoning tokens in `output_tokens`: they cost the output price."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

PER = 1_000_000
DEFAULT = 'default'   # the price table's entry for a model it does not list (and for codex's own default model)
SPLIT_KEYS = ('billed_input_tokens', 'cached_input_tokens', 'output_tokens', 'reasoning_output_tokens')


class Price(Protocol):
    @property
    def input(self) -> float: ...
    @property
    def cached_input(self) -> float | None: ...   # None: the input price
    @property
    def output(self) -> float: ...


def _int(usage: Mapping[str, Any] | None, key: str) -> int:
    try:
        return max(int((usage or {}).get(key) or 0), 0)
    except (TypeError, ValueError):
        return 0


def billed_input(usage: Mapping[str, Any] | None) -> int:
    """Input tokens not served from the provider's cache (Codex counts cached ones in `input_tokens` too)."""
    return max(_int(usage, 'input_tokens') - _int(usage, 'cached_input_tokens'), 0)


def with_split(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The usage record with `billed_input_tokens` beside its own keys (None stays None)."""
    if usage is None:
        return None
    return {**{k: _int(usage, k) for k in usage}, 'billed_input_tokens': billed_input(usage)}


def price_of(prices: Mapping[str, Price], model: str | None) -> Price | None:
    return prices.get(model or DEFAULT) or prices.get(DEFAULT)


def usage_cost(prices: Mapping[str, Price], model: str | None, usage: Mapping[str, Any] | None) -> float | None:
    """What `usage` of `model` costs by the table; None when the table has no price for it."""
    price = price_of(prices, model)
    if price is None:
        return None
    cached = price.input if price.cached_input is None else price.cached_input
    return (billed_input(usage) * price.input + _int(usage, 'cached_input_tokens') * cached
            + _int(usage, 'output_tokens') * price.output) / PER


def money(amount: float) -> str:
    """A cost as people read it: cents for sums that have them, more digits for the small ones."""
    return f'{amount:,.2f}' if amount >= 1 or amount == 0 else f'{amount:.4f}'
