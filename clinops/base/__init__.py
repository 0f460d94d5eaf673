"""The base every app imports (app label `clinops`): audit trail, errors, parsing, task helpers,
metrics, worker heartbeat. It imports no app (the layers contract in .importlinter)."""
