"""What runs inside the user's training process: the stdlib client, the NVML sampler, framework callbacks."""
