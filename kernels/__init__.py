"""Selective scans: one direction (mamba's signature) and K directions merged in image order."""
from .reference import multi_scan_ref, selective_scan_ref

__all__ = ["multi_scan_ref", "selective_scan_ref"]
