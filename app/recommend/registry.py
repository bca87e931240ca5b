"""The 14 strategies as data: what each requires, its fallback, its mode (API.md section 5).

A new strategy is a function in its family module plus one entry here; the contract test
(tests/recommend/test_contract.py) is parametrised over this registry and picks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.recommend.ranking import FactorRanking, RankContext, Ranking
from app.recommend.strategies import personalized, popularity, repeat, session, similarity

USER = "user_id"
ITEM = "context_item_id"
ITEM_OR_CATEGORY = "context_item_id or filters.category"


@dataclass(frozen=True)
class Strategy:
    name: str  # canonical: session_based keeps its underscore, every other name is kebab-case
    rank: Callable[[RankContext], Ranking | FactorRanking | None]
    requires: str | None
    fallback: str | None
    mode: str  # behavioral | semantic | hybrid | popularity
    summary: str


_STRATEGIES = [
    Strategy("personalized", personalized.personalized, USER, "trending", "behavioral",
             "the user's learned preferences, folded in with their latest events; excludes purchased items"),
    Strategy("similar", similarity.similar, ITEM, "trending", "hybrid",
             "behavioural neighbours blended with attribute similarity; never the item itself"),
    Strategy("frequently-bought-together", similarity.frequently_bought_together, ITEM, "category-popular",
             "behavioral", "items co-purchased with the item (same order or session), by lift and confidence"),
    Strategy("frequently-consumed-together", similarity.frequently_consumed_together, ITEM, "category-popular",
             "behavioral", "items engaged with in the same sessions as the item"),
    Strategy("session_based", session.session_based, USER, "trending", "behavioral",
             "intent of the user's last ~5 interactions, recency-weighted, real time"),
    Strategy("session-resumption", session.session_resumption, USER, "trending", "behavioral",
             "the user's latest interrupted session: its items and their natural continuations"),
    Strategy("abandonment-recovery", session.abandonment_recovery, USER, "trending", "hybrid",
             "alternatives for items viewed or carted but not purchased in the user's last session"),
    Strategy("trending", popularity.trending, None, "popular", "popularity",
             "items whose weighted activity is rising fastest now"),
    Strategy("popular", popularity.popular, None, "new-arrivals", "popularity",
             "most engaged and purchased items over a long window"),
    Strategy("category-popular", popularity.category_popular, ITEM_OR_CATEGORY, "popular", "popularity",
             "popular within the context item's (or filters.category's) category"),
    Strategy("new-arrivals", popularity.new_arrivals, None, "popular", "popularity",
             "newest active items by created_at, ties broken by early traction"),
    Strategy("recently-viewed", session.recently_viewed, USER, "trending", "behavioral",
             "the user's recently viewed items, most recent first, de-duplicated"),
    Strategy("buy-again", repeat.buy_again, USER, "popular", "behavioral",
             "items the user bought before and is due to buy again"),
    Strategy("price-optimized", personalized.price_optimized, USER, "trending", "hybrid",
             "personalized, re-ranked toward the user's usual price band"),
]

REGISTRY: dict[str, Strategy] = {s.name: s for s in _STRATEGIES}
DEFAULT_STRATEGY = "personalized"


def _other_spelling(name: str) -> str:
    return name.replace("-", "_") if "-" in name else name.replace("_", "-")


# Either spelling of each name is accepted and answered with the canonical one.
_ALIASES: dict[str, str] = {**{_other_spelling(n): n for n in REGISTRY}, **{n: n for n in REGISTRY}}


def resolve(name: str | None) -> Strategy | None:
    if name is None:
        return REGISTRY[DEFAULT_STRATEGY]
    canonical = _ALIASES.get(name.strip().lower())
    return REGISTRY.get(canonical) if canonical else None


def fallback_chain(strategy: Strategy) -> list[Strategy]:
    """The strategy, then its fallback, then that one's, ... each once (popular <-> new-arrivals)."""
    chain: list[Strategy] = []
    current: Strategy | None = strategy
    while current is not None and current not in chain:
        chain.append(current)
        current = REGISTRY.get(current.fallback) if current.fallback else None
    return chain
