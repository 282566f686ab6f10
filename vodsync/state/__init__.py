"""The state file: what vodsync has done, recorded in SQLite."""
