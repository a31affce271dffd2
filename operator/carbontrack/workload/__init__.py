"""The Kubernetes objects a CarbonTrackedJob becomes: its Indexed Job with the sidecar, its Service."""
