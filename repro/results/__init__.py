"""The results contract: the store owns the schema (columns, statuses, case strings, row checks),
the run manifest records the environment, the summary prints a finished sweep."""
