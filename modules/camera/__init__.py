"""Simulated camera module: JPEG frames of photos shipped with scikit-image."""
