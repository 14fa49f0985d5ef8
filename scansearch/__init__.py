"""scansearch: neural architecture search over the scan directions of vision Mamba models."""
__version__ = "0.1.0"

from .genotype import Genotype, GenotypeError
from .spaces import get_pattern, load_space

__all__ = ["Genotype", "GenotypeError", "__version__", "get_pattern", "load_space"]
