"""What devices send: upload rules, the wire format, the device API, receiving and processing
windows, raw-window retention and the device simulator (README "Where each responsibility lies")."""
