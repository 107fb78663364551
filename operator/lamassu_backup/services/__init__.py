"""Operator services: what the kopf handlers ask for (scheduling, tracking, retention, restore)."""
