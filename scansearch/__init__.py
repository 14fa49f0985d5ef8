"""scansearch: neural architecture search over the scan directions of vision Mamba models."""
__version__ = "0.1.0"

from .genotype import Genotype, GenotypeError
from .models import ModelError, build_model, load_model, save_model
from .spaces import get_pattern, load_space
from .uncertainty import Uncertainty, expected_calibration_error, predict_with_uncertainty

__all__ = ["Genotype", "GenotypeError", "ModelError", "Uncertainty", "__version__", "build_model",
           "expected_calibration_error", "get_pattern", "load_model", "load_space", "predict_with_uncertainty",
           "save_model"]
