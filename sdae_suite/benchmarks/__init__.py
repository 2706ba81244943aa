"""Speed and hardware measurements: step cost of the pretraining variants, MFU, and the GPU readiness check."""
