"""The validate function."""
