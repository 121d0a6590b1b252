"""tilelang-repro: the shared measuring machinery (registry, gate, timer, store, report)."""
