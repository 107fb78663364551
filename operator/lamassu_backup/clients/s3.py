"""S3 (and S3-compatible) object store client: streaming multipart upload, streaming download.

An upload is only visible once :meth:`MultipartUpload.complete` succeeds; every failure path
aborts it, so no partial object is ever left looking complete. Memory is bounded by the part size
times the number of parts in flight, whatever the object size.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import StorageError
from ..models.runner import S3Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

T = TypeVar("T")
MIB = 1024 * 1024


@dataclass(frozen=True)
class S3Connection:
    """How to reach a bucket; credentials are values read from Secret files by the caller."""

    bucket: str
    region: str = "us-east-1"
    endpoint: str | None = None
    force_path_style: bool = False
    ca_file: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    sse: Literal["aws:kms", "AES256", "none"] = "aws:kms"
    kms_key_id: str | None = None
    storage_class: str | None = None
    part_size: int = 8 * MIB
    max_in_flight: int = 2

    @classmethod
    def of(
        cls,
        settings: S3Settings,
        *,
        access_key_id: str | None,
        secret_access_key: str | None,
        session_token: str | None = None,
        ca_file: str | None = None,
    ) -> S3Connection:
        """The one translation of the runner's S3 settings (also what the operator derives from
        a policy) into a connection; the caller supplies the credential values."""
        return cls(
            bucket=settings.bucket,
            region=settings.region,
            endpoint=settings.endpoint,
            force_path_style=settings.force_path_style,
            ca_file=ca_file or settings.ca_file,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            sse=settings.sse,
            kms_key_id=settings.kms_key_id,
            storage_class=settings.storage_class,
            part_size=settings.part_size_mib * MIB,
        )


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD says about an object."""

    key: str
    size: int
    etag: str
    sse: str | None
    kms_key_id: str | None


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        msg = err.get("Message", "")
        return f"{code}: {msg}" if msg else str(code)
    return f"{type(exc).__name__}: {exc}"


def _guard(what: str, call: Callable[[], T]) -> T:
    """Run one S3 call, converting botocore errors into StorageError naming the operation."""
    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"S3 {what} failed: {_describe(exc)}") from None


class S3Store:
    """One bucket."""

    def __init__(self, conn: S3Connection) -> None:
        self.conn = conn
        config = Config(
            region_name=conn.region,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path" if conn.force_path_style else "auto"},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=max(8, conn.max_in_flight * 2 + 4),
            # Our own SHA-256 of the stored bytes is recorded and re-checked before any restore;
            # a per-part CRC32 on top costs CPU on the hot path for no added guarantee over TLS.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=conn.access_key_id,
            aws_secret_access_key=conn.secret_access_key,
            aws_session_token=conn.session_token,
            region_name=conn.region,
        )
        self.client: S3Client = session.client(
            "s3",
            endpoint_url=conn.endpoint or None,
            config=config,
            verify=conn.ca_file if conn.ca_file else None,
        )

    def url(self, key: str) -> str:
        """s3:// URL of a key, for messages and status."""
        return f"s3://{self.conn.bucket}/{key}"

    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.conn.sse != "none":
            args["ServerSideEncryption"] = self.conn.sse
        if self.conn.sse == "aws:kms" and self.conn.kms_key_id:
            args["SSEKMSKeyId"] = self.conn.kms_key_id
        if self.conn.storage_class:
            args["StorageClass"] = self.conn.storage_class
        return args

    def check_bucket(self) -> None:
        """Fail early, with a clear message, when the bucket is unreachable or forbidden."""
        _guard(
            f"HeadBucket {self.url('')}", lambda: self.client.head_bucket(Bucket=self.conn.bucket)
        )

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Store a small object in one request."""
        _guard(
            f"PutObject {self.url(key)}",
            lambda: self.client.put_object(
                Bucket=self.conn.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                **self._sse_args(),  # type: ignore[arg-type]
            ),
        )

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole (manifests, sidecars, part records)."""
        resp = _guard(
            f"GetObject {self.url(key)}",
            lambda: self.client.get_object(Bucket=self.conn.bucket, Key=key),
        )
        body = resp["Body"]
        return _guard(f"GetObject {self.url(key)}", body.read)

    def iter_object(self, key: str, chunk_size: int = MIB) -> Iterator[bytes]:
        """Stream an object in chunks without holding it in memory."""
        resp = _guard(
            f"GetObject {self.url(key)}",
            lambda: self.client.get_object(Bucket=self.conn.bucket, Key=key),
        )
        body = resp["Body"]
        try:
            while True:
                chunk = _guard(f"GetObject {self.url(key)}", lambda: body.read(chunk_size))
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def head(self, key: str) -> ObjectInfo | None:
        """Object metadata, or None when the object does not exist."""
        try:
            resp = self.client.head_object(Bucket=self.conn.bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"S3 HeadObject {self.url(key)} failed: {_describe(exc)}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 HeadObject {self.url(key)} failed: {_describe(exc)}") from None
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=str(resp.get("ETag", "")).strip('"'),
            sse=resp.get("ServerSideEncryption"),
            kms_key_id=resp.get("SSEKMSKeyId"),
        )

    def list_keys(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under a prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.conn.bucket, Prefix=prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=str(item.get("ETag", "")).strip('"'),
                        sse=None,
                        kms_key_id=None,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"S3 ListObjectsV2 {self.url(prefix)} failed: {_describe(exc)}"
            ) from None

    def list_prefixes(self, prefix: str) -> list[str]:
        """Immediate "folders" under a prefix (which ends in '/')."""
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.conn.bucket, Prefix=prefix, Delimiter="/"):
                out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"S3 ListObjectsV2 {self.url(prefix)} failed: {_describe(exc)}"
            ) from None
        return out

    def delete_keys(self, keys: list[str]) -> None:
        """Delete objects, in the order given, in batches of up to 1000."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            resp = _guard(
                f"DeleteObjects under {self.url(batch[0])}",
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.conn.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                ),
            )
            errors = resp.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 DeleteObjects failed for {len(errors)} object(s), first "
                    f"{self.url(first.get('Key', '?'))}: "
                    f"{first.get('Code')}: {first.get('Message')}"
                )

    def abort_stale_uploads(self, prefix: str) -> int:
        """Abort multipart uploads left under a prefix by a killed runner; returns how many."""
        resp = _guard(
            f"ListMultipartUploads {self.url(prefix)}",
            lambda: self.client.list_multipart_uploads(Bucket=self.conn.bucket, Prefix=prefix),
        )
        count = 0
        for upload in resp.get("Uploads", []):
            key, upload_id = upload["Key"], upload["UploadId"]
            _guard(
                f"AbortMultipartUpload {self.url(key)}",
                lambda key=key, upload_id=upload_id: self.client.abort_multipart_upload(  # type: ignore[misc]
                    Bucket=self.conn.bucket, Key=key, UploadId=upload_id
                ),
            )
            count += 1
        return count

    def multipart(
        self, key: str, content_type: str = "application/octet-stream"
    ) -> MultipartUpload:
        """Start a streaming upload of ``key``."""
        resp = _guard(
            f"CreateMultipartUpload {self.url(key)}",
            lambda: self.client.create_multipart_upload(
                Bucket=self.conn.bucket,
                Key=key,
                ContentType=content_type,
                **self._sse_args(),  # type: ignore[arg-type]
            ),
        )
        return MultipartUpload(self, key, resp["UploadId"])


class MultipartUpload:
    """A file-like sink that uploads parts in the background as they fill.

    At most ``max_in_flight`` parts are being sent while the next one fills, so a slow store
    slows the producer down (back-pressure) instead of growing memory.
    """

    def __init__(self, store: S3Store, key: str, upload_id: str) -> None:
        self.store = store
        self.key = key
        self.upload_id = upload_id
        self.part_size = store.conn.part_size
        self._buffer = bytearray()
        self._parts: list[tuple[int, Future[dict[str, Any]]]] = []
        self._slots = threading.BoundedSemaphore(store.conn.max_in_flight)
        self._pool = ThreadPoolExecutor(
            max_workers=store.conn.max_in_flight, thread_name_prefix="s3-part"
        )
        self._error: Exception | None = None
        self._closed = False
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes; a full part is handed to an upload thread."""
        if self._error is not None:
            raise self._error
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self.part_size:
            with memoryview(self._buffer) as view:
                chunk = bytes(view[: self.part_size])  # one copy, handed to the upload thread
            del self._buffer[: self.part_size]
            self._submit(chunk)

    def _submit(self, chunk: bytes) -> None:
        self._slots.acquire()
        number = len(self._parts) + 1
        future = self._pool.submit(self._upload_part, number, chunk)
        self._parts.append((number, future))

    def _upload_part(self, number: int, chunk: bytes) -> dict[str, Any]:
        try:
            resp = _guard(
                f"UploadPart {number} of {self.store.url(self.key)}",
                lambda: self.store.client.upload_part(
                    Bucket=self.store.conn.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=chunk,
                ),
            )
            return {"PartNumber": number, "ETag": resp["ETag"]}
        except Exception as exc:
            self._error = exc
            raise
        finally:
            self._slots.release()

    def complete(self) -> int:
        """Send the last part, wait for all, and commit the object; returns its size."""
        if self._closed:
            raise StorageError(f"upload of {self.store.url(self.key)} is already closed")
        try:
            if self._buffer or not self._parts:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            parts = [future.result() for _, future in self._parts]
            _guard(
                f"CompleteMultipartUpload {self.store.url(self.key)}",
                lambda: self.store.client.complete_multipart_upload(
                    Bucket=self.store.conn.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                ),
            )
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True
            self._pool.shutdown(wait=True)
        return self.size

    def abort(self) -> None:
        """Discard every uploaded part; the key never becomes visible. Safe to call twice."""
        self._closed = True
        self._buffer.clear()
        for _, future in self._parts:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        # Already aborted or completed is fine; abort_stale_uploads cleans anything left.
        with contextlib.suppress(ClientError, BotoCoreError):
            self.store.client.abort_multipart_upload(
                Bucket=self.store.conn.bucket, Key=self.key, UploadId=self.upload_id
            )
