"""The train-launch function."""
