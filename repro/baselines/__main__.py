"""`python -m repro.baselines [--dry-run | --estimate] [--force] [key=value ...]`

Builds every baseline of configs/baselines.yaml into the cache (or only those of
`only=[fa3,flash_mla]`), reusing those already built with the same recipe. Overrides take the
config's keys with or without `baselines.`: `sources.fa3=/path/to/clone-or-archive`,
`sources_dir=third_party`, `cache_dir=/scratch/baselines`, `arch=90`, `jobs=8`.

Exit status: 0 every selected baseline is usable (or skipped: not for this GPU), 1 one or more
failed (each said in one `error:` line; the others were still built), 2 a bad config or override.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro.baselines.build import build_all, failure_tail, summary_lines
from repro.baselines.plan import plan_entry, render_plan, estimate_line
from repro.baselines.progress import Progress, fmt_seconds
from repro.baselines.recipes import ConfigError, load_settings


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m repro.baselines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; fetch and build nothing")
    parser.add_argument("--estimate", action="store_true", help="print only how long the build should take")
    parser.add_argument("--force", action="store_true", help="rebuild even what the cache already holds")
    parser.add_argument("--config", type=Path, default=None, help="recipes file (default configs/baselines.yaml)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise ConfigError(f"{bad[0]!r}: overrides are key=value")
        settings = load_settings(args.config, tuple(args.overrides))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(render_plan(settings)))
        return 0
    if args.estimate:
        from repro.baselines.build import resolve_arch

        arch, _ = resolve_arch(settings)
        print("make baselines " + estimate_line([plan_entry(r, settings, arch) for r in settings.selected()]))
        return 0
    return run(settings, args.force)


def run(settings, force: bool) -> int:
    recipes = settings.selected()
    print(f"building {len(recipes)} baseline(s) into {settings.cache_dir}", flush=True)
    records = build_all(settings, Progress(len(recipes)), force=force)
    print("\nsummary (name, outcome, time, version or commit, what was built):")
    print("\n".join(summary_lines(records)))
    total = sum(r.get("seconds") or 0 for r in records if r.get("outcome") != "reused")
    print(f"total {fmt_seconds(total)}; records in {settings.cache_dir}/<name>/stamp.json")
    (settings.cache_dir / "last-run.json").write_text(json.dumps(records, indent=2, default=str) + "\n")
    failed = [r for r in records if r.get("outcome") == "failed"]
    for record in failed:
        for line in failure_tail(record):
            print(f"  | {line}", file=sys.stderr)
        print(f"error: {record['name']}: {record.get('error')}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
