"""Running a sweep: plan the cases, validate every override, measure (in-process or isolated in a
child), shard and merge parallel jobs, and the scaling recording. Uses measure/ and results/."""
