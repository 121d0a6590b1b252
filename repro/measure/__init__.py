"""Measuring one (case, backend): the experiment contract, the correctness gate, the one timer,
schedule search, hardware profiles and GPU discovery. Imports nothing else from repro."""
