"""scansearch: neural architecture search over the scan directions of vision Mamba models."""
__version__ = "0.1.0"
