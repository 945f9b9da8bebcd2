"""podindex: knows every pod in one or more Kubernetes clusters."""

__version__ = "0.1.0"
