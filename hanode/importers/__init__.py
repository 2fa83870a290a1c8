"""Importers: configurations of the tools hanode replaces, read (never executed) into
hanode.toml."""
