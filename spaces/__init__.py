"""Scan patterns, search spaces and their locality metrics."""
from .errors import PatternError, SpaceError
from .metrics import Locality, best_subset, pattern_locality, set_locality
from .patterns import BASE_PATTERNS, NONE, Pattern, get_pattern, is_pattern_name, orders
from .space import SearchSpace, load_space, shipped_spaces, space_from_dict

__all__ = [
    "BASE_PATTERNS", "NONE", "Locality", "Pattern", "PatternError", "SearchSpace", "SpaceError",
    "best_subset", "get_pattern", "is_pattern_name", "load_space", "orders", "pattern_locality",
    "set_locality", "shipped_spaces", "space_from_dict",
]
