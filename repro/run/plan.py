"""Case planning: a composed config -> (experiment, backends, this shard's cases), with no device.

Both the runner and the report's coverage lines use it, so "what a sweep would run" has one answer.
"""
from __future__ import annotations

from omegaconf import DictConfig

from repro.measure.experiment import load_experiment
from repro.run.shard import parse_shard, select
from repro.run.validate import check_experiment_name, validate


def plan(cfg: DictConfig):
    """Everything that can be checked without a device: (experiment, backends, this shard's cases)."""
    check_experiment_name(cfg.experiment)
    exp = load_experiment(cfg.experiment)
    backends, cases = validate(cfg, exp)
    return exp, backends, select(cases, parse_shard(cfg.get("shard")), exp.flops)
