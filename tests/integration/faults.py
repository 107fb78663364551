"""Fault injection for the runner tests: an S3 proxy that refuses on cue, an S3 server that can
crash and come back with its state, an HTTPS proxy that acts on the real server between two
requests, a small disk, and the fault matrix's record (printed at the end of the run)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from lamassu_platform._util import REPO_ROOT, free_port, stop_process, wait_for

Rule = Callable[[str, str], bool]
"""(method, path with query) -> True to refuse this request."""

_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied (injected fault)</Message></Error>"
)


class FaultyS3Proxy:
    """Forwards to an S3 endpoint, answering 403 AccessDenied to requests the rule picks."""

    def __init__(self, upstream: str, refuse: Rule) -> None:
        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 80
        self.refuse = refuse
        self.refused: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.refuse(self.command, self.path):
                    proxy.refused.append(f"{self.command} {self.path}")
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_DENIED)))
                    self.end_headers()
                    self.wfile.write(_DENIED)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    skip = ("transfer-encoding", "connection", "content-length")
                    if key.lower() not in skip or (
                        self.command == "HEAD" and key.lower() == "content-length"
                    ):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------- the fault matrix
@dataclass
class Cell:
    """One cell's figures: what was injected where, the end state seen, how long it took."""

    name: str
    at: str = "?"
    end: str = "?"
    outcome: str = "running"
    seconds: float = 0.0


@dataclass
class FaultMatrix:
    """Every cell run in this session, for the summary (``fault-matrix.txt``)."""

    cells: list[Cell] = field(default_factory=list)
    path: Path | None = None

    @contextlib.contextmanager
    def cell(self, name: str) -> Iterator[Cell]:
        """Time a cell; its outcome is ``passed`` unless the block raised."""
        row = Cell(name)
        self.cells.append(row)
        started = time.monotonic()
        try:
            yield row
        except BaseException as exc:
            row.outcome = f"FAILED ({type(exc).__name__})"
            raise
        else:
            row.outcome = "passed"
        finally:
            row.seconds = round(time.monotonic() - started, 1)

    def text(self) -> str:
        """The summary table, one line per cell."""
        passed = sum(c.outcome == "passed" for c in self.cells)
        head = ("cell", "fault injected at", "end state", "outcome", "s")
        rows = [head] + [(c.name, c.at, c.end, c.outcome, f"{c.seconds:.1f}") for c in self.cells]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4].rjust(6) for r in rows
        ]
        return "\n".join([*lines, f"fault cells passed: {passed} of {len(self.cells)}"]) + "\n"


MATRIX = FaultMatrix()
"""The session's cells; tests/conftest.py prints them at the end of the run."""


@pytest.fixture(scope="session")
def fault_matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMatrix]:
    """The session's matrix; written to ``fault-matrix.txt`` in pytest's base temp dir."""
    yield MATRIX
    if MATRIX.cells:
        MATRIX.path = tmp_path_factory.getbasetemp() / "fault-matrix.txt"
        MATRIX.path.write_text(MATRIX.text())


# ------------------------------------------------------------------------------ processes
def descendants(pid: int) -> dict[int, str]:
    """pid -> command name of every process below ``pid``."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        parents[int(stat.parent.name)] = (ppid, name)
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == current and child not in found:
                found[child] = name
                frontier.append(child)
    return found


def io_bytes(pid: int, counter: str) -> int:
    """``rchar`` or ``wchar`` of a process (0 when it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/io").read_text().split(f"{counter}:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0


def wait_for_stream(
    proc: subprocess.Popen[str], tool: str, counter: str, threshold: int, timeout: float = 120
) -> tuple[int, int]:
    """Wait until a ``tool`` process below ``proc`` has moved ``threshold`` bytes (its
    ``counter``: rchar for a reader, wchar for a writer); returns (its pid, the bytes seen).
    Raises when ``proc`` ends first: the fault would have missed the stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the runner ended (exit {proc.returncode}) before {tool} streamed"
            )
        for pid, name in descendants(proc.pid).items():
            if name == tool and (seen := io_bytes(pid, counter)) >= threshold:
                return pid, seen
        time.sleep(0.002)
    raise AssertionError(f"{tool} never moved {threshold} bytes")


# ------------------------------------------------------------------------ a restartable S3
class RestartableS3:
    """The Versity S3 Gateway over a directory on a fixed port: it can be killed (a crash, not a
    refusal) and started again with every bucket, object and multipart upload as it left them
    (moto_server keeps its state in memory, which a stopped process loses)."""

    region = "us-east-1"
    access_key = "AKIALAMASSUFAULT0001"
    secret_key = "lamassu-fault-secret-key-not-real"

    def __init__(self, root: Path) -> None:
        self.root = root / "objects"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "versitygw.log"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.binary = (
            subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "build-versitygw.sh")],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )

    def start(self) -> Self:
        """Start (again) on the same port and directory; wait until it answers S3."""
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    f"127.0.0.1:{self.port}",
                    "--access",
                    self.access_key,
                    "--secret",
                    self.secret_key,
                    "--region",
                    self.region,
                    "--quiet",
                    "posix",
                    str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(lambda: self.client().list_buckets() is not None, timeout=30, what="versitygw")
        return self

    def kill(self) -> None:
        """SIGKILL the server's process group: connections reset, the port refuses."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        """A boto3 client for this server (one attempt: a stopped server must say so at once)."""
        factory: Any = boto3.client
        return factory(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
            ),
        )

    def objects(self, bucket: str, prefix: str) -> list[str]:
        """Completed objects under a prefix (relative keys)."""
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"][len(prefix) :] for o in listed.get("Contents", []))

    def uploads(self, bucket: str, prefix: str) -> list[str]:
        """Incomplete multipart uploads under a prefix."""
        listed = self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        return sorted(u["Key"] for u in listed.get("Uploads", []))


# ------------------------------------------------------------------ an HTTPS proxy with a hook
After = Callable[[str, str, int], None]
"""(method, path, upstream status) -> None: runs after the upstream answered, before the client
gets the answer (e.g. seal OpenBao right after the first KV write succeeded)."""


class HookedTlsProxy:
    """Terminates TLS with a certificate of its own CA (``ca_path``: give it to the client) and
    forwards to an HTTPS upstream verified against ``upstream_ca``, calling ``after`` on every
    exchange. It changes no byte: the fault is whatever ``after`` does to the real server."""

    def __init__(self, upstream: str, upstream_ca: Path, work: Path, after: After) -> None:
        from lamassu_platform.openbao import _make_tls

        target = urlsplit(upstream)
        self.upstream_host = target.hostname or "127.0.0.1"
        self.upstream_port = target.port or 443
        work.mkdir(parents=True, exist_ok=True)
        self.ca_path, cert, key = _make_tls(work)
        self.after = after
        self.seen: list[str] = []
        upstream_tls = ssl.create_default_context(cafile=str(upstream_ca))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPSConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60, context=upstream_tls
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                proxy.seen.append(f"{self.command} {self.path} {resp.status}")
                proxy.after(self.command, self.path, resp.status)
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_LIST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.address = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- a small disk
@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``8m``) mounted at ``where``: a full disk at a known byte.
    Skips the test when this machine may not mount (no CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)
