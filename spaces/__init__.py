"""Scan patterns, search spaces and their locality metrics."""
from scansearch.spaces.errors import PatternError, SpaceError
from scansearch.spaces.metrics import Locality, best_subset, pattern_locality, set_locality
from scansearch.spaces.patterns import BASE_PATTERNS, NONE, Pattern, get_pattern, is_pattern_name, orders
from scansearch.spaces.space import SearchSpace, load_space, shipped_spaces, space_from_dict

__all__ = [
    "BASE_PATTERNS", "NONE", "Locality", "Pattern", "PatternError", "SearchSpace", "SpaceError",
    "best_subset", "get_pattern", "is_pattern_name", "load_space", "orders", "pattern_locality",
    "set_locality", "shipped_spaces", "space_from_dict",
]
