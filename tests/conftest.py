"""Session fixtures shared by every tier: the real control plane and the pod runner (its kubelet).

One control plane per test session: it takes a few seconds to start once the binary is cached
(the first build takes 10-20 minutes; see ``scripts/build-controlplane.sh``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from lamassu_platform import figures
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.podrunner import PodRunner

pytest_plugins = ["lamassu_platform.leak_scanner"]
"""After every test on the platform, no Secret value may appear in logs, Events or status."""


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (RBAC on) + the Job/GC/namespace/service-account controllers."""
    with ControlPlane(tmp_path_factory.mktemp("controlplane")) as cp:
        yield cp


@pytest.fixture(scope="session")
def pod_runner(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodRunner]:
    """A Ready Node whose Pods run as host processes (the explicit opt-in: these tests are of
    the kubelet's API behaviour, with arbitrary commands); every process is killed at the end.
    Containers from images: tests/platform/test_podrunner_images.py."""
    with PodRunner(
        control_plane.kubeconfig, tmp_path_factory.mktemp("podrunner"), host_processes=True
    ) as runner:
        yield runner


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The run's figures (fuzz, leak scans) and the fault matrix's (cell, where the fault was injected, end state, seconds), when
    a fault-matrix file ran (tests/integration/faults.py records them)."""
    summary = figures.text()
    if summary:
        terminalreporter.section("figures")
        terminalreporter.write(summary)
    faults = sys.modules.get("integration.faults")
    matrix = getattr(faults, "MATRIX", None)
    if matrix is None or not matrix.cells:
        return
    terminalreporter.section("fault matrix")
    terminalreporter.write(matrix.text())
    if matrix.path is not None:
        terminalreporter.write_line(f"written to {matrix.path}")
