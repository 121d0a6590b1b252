"""TileLang (and Triton, under kernels/triton/) kernels written for this suite.

Nothing here knows about Hydra, timing or results: each module holds a builder that reads
like the algorithm and a thin wrapper that compiles it (cached) and calls it.
"""
