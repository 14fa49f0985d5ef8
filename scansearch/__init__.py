"""scansearch: neural architecture search over the scan directions of vision Mamba models."""
__version__ = "0.1.0"

from .genotype import Genotype, GenotypeError
from .models import ModelError, build_model, load_model, save_model
from .spaces import get_pattern, load_space

__all__ = ["Genotype", "GenotypeError", "ModelError", "__version__", "build_model", "get_pattern", "load_model",
           "load_space", "save_model"]
