"""The `empo` command line (empo_cli.main): the top layer, above empo_operator and empo_trainer,
which sit above empo_api (.importlinter)."""
