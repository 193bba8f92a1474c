"""Human evaluation: a small rating web app (FastAPI + SQLite) and its aggregation."""

from lpm.bench.rating.aggregate import aggregate_ratings, majority
from lpm.bench.rating.store import (
    RATERS_PER_PAIR,
    RATING_DIMENSIONS,
    Pair,
    RatingStore,
)

__all__ = [
    "RATERS_PER_PAIR",
    "RATING_DIMENSIONS",
    "Pair",
    "RatingStore",
    "aggregate_ratings",
    "majority",
]
