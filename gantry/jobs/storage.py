"""Object storage behind one interface: `file://` folders and `s3://bucket/prefix` (boto3).

Keys are relative to the storage root: `jobs/<job_id>/checkpoints/step-00001200.pt`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from gantry.jobs.errors import InvalidInput, ServiceUnavailable


class ObjectNotFound(KeyError):
    pass


class ObjectStore(Protocol):
    root: str

    def put_bytes(self, key: str, data: bytes) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...


class FileStore:
    """A folder on a local or shared file system. Writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.path = root
        self.root = root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        path = (self.path / key).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise ValueError(f"key escapes the storage root: {key}")
        return path

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.path.resolve()
        start = self._path(prefix)
        folder = start if start.is_dir() else start.parent
        if not folder.exists():
            return []
        keys = [p.relative_to(base).as_posix() for p in folder.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".tmp-"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Store:
    """An S3 bucket (or a prefix in one). Credentials come from the usual AWS variables."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, **kwargs):  # type: ignore[no-untyped-def]
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (EndpointConnectionError, NoCredentialsError) as exc:
            where = self.endpoint_url or "AWS"
            raise ServiceUnavailable(
                "object storage", f"cannot reach S3 at {where}: {type(exc).__name__}"
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(kwargs.get("Key", "")) from None
            if code == "NoSuchBucket":
                raise ServiceUnavailable("object storage", f"bucket {self.bucket!r} does not exist") from None
            raise

    def put_bytes(self, key: str, data: bytes) -> str:
        self._call(self.client.put_object, Key=self._key(key), Body=data)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self._call(self.client.get_object, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        strip = len(self.prefix) + 1 if self.prefix else 0
        while True:
            page = self._call(self.client.list_objects_v2, Prefix=self._key(prefix), **token)
            keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def open_store(url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """`file:///abs/path` or `s3://bucket/prefix`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput("GANTRY_STORAGE_URL", f"{url!r} names no bucket; use s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url)
    raise InvalidInput("GANTRY_STORAGE_URL", f"{url!r}: use file:///path or s3://bucket/prefix")


def split_uri(uri: str, *, endpoint_url: str | None = None) -> tuple[ObjectStore, str]:
    """A user's data URI as (store, key-or-prefix): `s3://bucket/key`, `file:///path` or a path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, "", endpoint_url=endpoint_url), parsed.path.lstrip("/")
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
    path = path.expanduser().resolve()
    return FileStore(path.parent), path.name


def uri_exists(uri: str, *, endpoint_url: str | None = None) -> bool:
    """True when a file, a folder or (for S3) an object or prefix exists at `uri`."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        return path.expanduser().exists()
    if parsed.scheme != "s3":
        raise InvalidInput("dataset", f"{uri!r}: use a path, file:// or s3:// URI")
    store, key = split_uri(uri, endpoint_url=endpoint_url)
    return store.exists(key) or bool(store.list(key.rstrip("/") + "/"))


def fetch_to_local(uri: str, dest: Path, *, endpoint_url: str | None = None) -> Path:
    """A local path for `uri`: paths and file:// as they are; S3 objects or prefixes downloaded."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        return path.expanduser().resolve()
    store, key = split_uri(uri, endpoint_url=endpoint_url)
    if store.exists(key):
        target = dest / Path(key).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(key))
        return target
    prefix = key.rstrip("/") + "/"
    keys = store.list(prefix)
    if not keys:
        raise InvalidInput("dataset", f"nothing at {uri}")
    folder = dest / Path(key.rstrip("/")).name
    for k in keys:
        target = folder / k[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(k))
    return folder


def check_storage(url: str, *, endpoint_url: str | None = None) -> None:
    """Refuse, before a job is recorded, object storage that cannot take its objects: an S3 bucket
    that is missing, refused (access denied) or unreachable, a folder that cannot be written. Raises
    ServiceUnavailable naming the bucket or folder (never a credential)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceUnavailable("object storage", f"cannot create {folder}: {exc.strerror}") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ServiceUnavailable("object storage", f"{folder} is not writable")
        return
    if parsed.scheme != "s3" or not parsed.netloc:
        open_store(url, endpoint_url=endpoint_url)  # raises InvalidInput with the forms it takes
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = parsed.netloc
    where = endpoint_name(endpoint_url)
    # One quick try: a submit should answer in seconds, not after the workers' retries.
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=10),
    )
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise ServiceUnavailable("object storage", f"no S3 credentials to reach bucket {bucket!r}") from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            reason = f"bucket {bucket!r} does not exist at {where}; create it first"
        elif code in ("403", "AccessDenied", "Forbidden"):
            reason = f"access to bucket {bucket!r} at {where} is denied (check the credentials and policy)"
        else:
            reason = f"bucket {bucket!r} at {where} answered {code or type(exc).__name__}"
        raise ServiceUnavailable("object storage", reason) from None
    except BotoCoreError as exc:
        raise ServiceUnavailable(
            "object storage", f"cannot reach S3 at {where} for bucket {bucket!r} ({type(exc).__name__})"
        ) from None


def endpoint_name(endpoint_url: str | None) -> str:
    """An S3 endpoint for messages, without any user or password in its URL."""
    if not endpoint_url:
        return "AWS"
    parsed = urlparse(endpoint_url)
    if not parsed.hostname:
        return endpoint_url
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.hostname}{port}"
