"""Where the volumes Job may run: next to the Pods that hold its ReadWriteOnce claims.

A ReadWriteOnce volume attaches to one node. A backup Pod scheduled elsewhere waits in
ContainerCreating (Multi-Attach error) until its deadline, and the SoftHSM tokens or file-engine
keys are silently not backed up. So the Job is pinned to the node of the Pods that mount such a
claim, and what no placement can satisfy is said before any Job is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SHARED_MODES = frozenset({"ReadWriteMany", "ReadOnlyMany"})
"""Access modes that let a Pod on any node mount the volume next to its current users."""


@dataclass(frozen=True)
class ClaimState:
    """What the cluster says about one claim of spec.components.volumes."""

    spec_field: str
    """The spec field naming it, for messages (spec.components.volumes[0].claimName)."""
    claim: str
    exists: bool
    access_modes: tuple[str, ...] = ()
    nodes: frozenset[str] = field(default_factory=frozenset)
    """Nodes of the Pods (not finished) that mount it now."""


@dataclass(frozen=True)
class Placement:
    """A node to pin the volumes Job to (or none), or why it cannot run."""

    node: str | None = None
    reason: str | None = None
    problem: str | None = None


def volume_placement(claims: Sequence[ClaimState]) -> Placement:
    """Decide the volumes Job's node from its claims' access modes and current users."""
    pinned: dict[str, list[str]] = {}
    for c in claims:
        if not c.exists:
            return Placement(
                reason="ClaimNotFound",
                problem=f"PersistentVolumeClaim {c.claim} ({c.spec_field}) does not exist: create it or correct the name",
            )
        modes = set(c.access_modes)
        if "ReadWriteOncePod" in modes and c.nodes:
            return Placement(
                reason="ClaimInUse",
                problem=(
                    f"PersistentVolumeClaim {c.claim} ({c.spec_field}) is ReadWriteOncePod and mounted by "
                    "a running Pod, so no other Pod can read it: change its access mode to "
                    "ReadWriteOnce, or back it up from the Pod that owns it"
                ),
            )
        if modes & SHARED_MODES or not c.nodes:
            continue
        for node in c.nodes:
            pinned.setdefault(node, []).append(c.claim)
    if len(pinned) > 1:
        where = "; ".join(f"{', '.join(sorted(v))} on {k}" for k, v in sorted(pinned.items()))
        return Placement(
            reason="ClaimsOnDifferentNodes",
            problem=(
                f"the ReadWriteOnce claims of spec.components.volumes are attached to different "
                f"nodes ({where}): one Pod cannot mount them all; put them in separate policies"
            ),
        )
    return Placement(node=next(iter(pinned), None))


def node_affinity(node: str) -> dict[str, object]:
    """A required affinity to one node by name (matchFields: node names and hostname labels may differ)."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            }
        }
    }
