"""Backup and disaster recovery for Lamassu IoT on Kubernetes."""

__version__ = "0.1.0"
