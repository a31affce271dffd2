"""The sidecar process: receive step markers, attribute energy, ship cumulative batches."""
