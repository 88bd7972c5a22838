"""Placeholder: filled by the storage / operator work; no fixtures yet."""
