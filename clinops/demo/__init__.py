"""The demo clinic and its months of history (seed_demo, run_demo), written through the same services
as production."""
