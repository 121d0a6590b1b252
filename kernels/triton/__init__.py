"""Triton kernels written for this suite, to compare with TileLang on equal terms."""
