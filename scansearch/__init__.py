"""scansearch: neural architecture search over the scan directions of vision Mamba models."""
from scansearch.genotype import Genotype, GenotypeError
from scansearch.models import ModelError, build_model, load_model, save_model
from scansearch.spaces import get_pattern, load_space
from scansearch.uncertainty import Uncertainty, expected_calibration_error, predict_with_uncertainty

__version__ = "0.1.0"


__all__ = ["Genotype", "GenotypeError", "ModelError", "Uncertainty", "__version__", "build_model",
           "expected_calibration_error", "get_pattern", "load_model", "load_space", "predict_with_uncertainty",
           "save_model"]
