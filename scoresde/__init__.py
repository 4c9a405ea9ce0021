"""The application layer: hydra CLI, training loop, data, checkpoints, logging and plots."""
