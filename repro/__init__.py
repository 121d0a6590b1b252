"""tilelang-repro's harness, grouped by job; imports run one way, top to bottom:

    cli.py        dispatches a composed config to one of the packages below
    report/       results/ -> paper/: tables, figures, claims ledger (reads results/, never runs)
    run/          running a sweep: plan, validate, runner, shard, merge, isolate, scaling
    loc/          counting code lines; portability/: builds per target
    results/      the results contract: store (schema, statuses, rows), manifest, summary
    measure/      measuring one case: experiment contract, gate, timer, tuning, hardware, devices
"""
