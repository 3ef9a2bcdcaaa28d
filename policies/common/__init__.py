"""Torch building blocks shared by policy families (training and export only; never served)."""
