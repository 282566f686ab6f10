"""`vodsync watch`: watching, the reconcile loop, signals, sd_notify and metrics."""
