"""Where the volumes Job may run, from its claims' access modes and the Pods that mount them."""

from __future__ import annotations

import pytest

from lamassu_backup.builders.placement import ClaimState, volume_placement

RWO = ("ReadWriteOnce",)
RWX = ("ReadWriteMany",)


def claim(name: str, modes: tuple[str, ...] = RWO, *nodes: str, exists: bool = True) -> ClaimState:
    return ClaimState(
        spec_field=f"spec.components.volumes[0].claimName ({name})",
        claim=name,
        exists=exists,
        access_modes=modes,
        nodes=frozenset(nodes),
    )


@pytest.mark.parametrize(
    ("claims", "node"),
    [
        pytest.param([], None, id="no claims"),
        pytest.param([claim("a")], None, id="rwo not in use: anywhere"),
        pytest.param([claim("a", RWO, "n1")], "n1", id="rwo in use: its node"),
        pytest.param([claim("a", RWO, "n1"), claim("b", RWO, "n1")], "n1", id="two rwo, one node"),
        pytest.param([claim("a", RWO, "n1"), claim("b", RWO)], "n1", id="rwo in use + idle rwo"),
        pytest.param([claim("a", RWX, "n1", "n2")], None, id="rwx: anywhere"),
        pytest.param([claim("a", RWX, "n2"), claim("b", RWO, "n1")], "n1", id="rwx + rwo"),
        pytest.param([claim("a", ("ReadWriteOncePod",))], None, id="rwop idle: anywhere"),
    ],
)
def test_placement(claims: list[ClaimState], node: str | None) -> None:
    placed = volume_placement(claims)
    assert placed.problem is None
    assert placed.node == node


@pytest.mark.parametrize(
    ("claims", "reason", "words"),
    [
        pytest.param(
            [claim("a", RWO, "n1"), claim("gone", exists=False)],
            "ClaimNotFound",
            ["gone", "does not exist"],
            id="missing claim",
        ),
        pytest.param(
            [claim("tokens", ("ReadWriteOncePod",), "n1")],
            "ClaimInUse",
            ["tokens", "ReadWriteOncePod"],
            id="rwop in use",
        ),
        pytest.param(
            [claim("a", RWO, "n1"), claim("b", RWO, "n2")],
            "ClaimsOnDifferentNodes",
            ["a on n1", "b on n2", "separate policies"],
            id="rwo claims on two nodes",
        ),
    ],
)
def test_what_no_placement_satisfies_is_said(
    claims: list[ClaimState], reason: str, words: list[str]
) -> None:
    placed = volume_placement(claims)
    assert placed.node is None
    assert placed.reason == reason
    assert placed.problem is not None
    for word in words:
        assert word in placed.problem
    assert "spec.components.volumes" in placed.problem
