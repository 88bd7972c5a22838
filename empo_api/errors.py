"""Errors every layer shares."""


class SpecError(ValueError):
    """The spec cannot run as written: the operator cannot turn it into children, or the trainer
    cannot train it. The message names the fields and what would work."""
