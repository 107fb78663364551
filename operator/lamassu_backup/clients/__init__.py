"""Clients of the outside world, one module per system (S3, Vault, GPG, Kubernetes, PostgreSQL).

Only these modules import boto3, hvac, gnupg or kubernetes, and each converts its library's
exceptions into the project's own errors at the boundary, with secrets scrubbed.
"""
