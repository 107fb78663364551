"""Thin kopf handlers: parse the body into the models, call a service, post its Events."""

from __future__ import annotations


def run(namespaces: list[str], health_port: int) -> None:
    """Run the operator (blocks). Importing the handlers module registers them with kopf."""
    import logging

    import kopf

    from . import operator as _handlers  # noqa: F401 - registration by import
    from . import restores as _restore_handlers  # noqa: F401 - registration by import

    kopf.configure(verbose=False)
    logging.getLogger("lamassu_backup").setLevel(logging.INFO)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )
