"""BP models: the pure model code (reference BP, protocol, features, training, intervals, accuracy,
gates) and, with the database, cuff calibrations, estimates, the registry and training glue
(docs/bp-model.md)."""
