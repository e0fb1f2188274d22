"""Gymnasium and TorchRL environments for next-item recommendation."""
