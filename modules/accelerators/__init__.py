"""Accelerators for the featurizer: model store, preprocessing, CPU/GPU/FPGA-emulator paths."""
