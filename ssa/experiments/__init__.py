"""Theory experiments (SSA_SPEC §3, docs/theory.md)."""
