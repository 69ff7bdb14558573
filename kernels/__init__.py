"""Triton kernels (and their plain PyTorch references); nothing here imports the rest of the repo."""
