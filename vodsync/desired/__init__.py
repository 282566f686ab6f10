"""Desired state: manifests and drop folders turned into validated items (pure, no network)."""
