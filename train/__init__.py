"""Turns a configuration into a trained checkpoint, metrics and test results."""
