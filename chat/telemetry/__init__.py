"""What the app tells its operators: Prometheus metrics (`metrics`) and the ids that log lines
carry (`context`). Imports nothing of the app, so every package may report through it."""
