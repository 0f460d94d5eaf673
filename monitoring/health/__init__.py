"""Model health: production accuracy, drift and subgroups, their alerts and autonomy suspensions."""
