"""Theory experiments (docs/ssa.md §3, docs/theory.md)."""
