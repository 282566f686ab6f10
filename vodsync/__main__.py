"""`python -m vodsync` runs the command line."""

from vodsync.cli import run

run()
