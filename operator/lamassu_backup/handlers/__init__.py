"""Thin kopf handlers: validate with the models, call a service, patch status."""
