"""Object storage behind one interface: `file://` folders and `s3://bucket/prefix` (boto3).

Keys are relative to the storage root: `jobs/<job_id>/spec.json` (gantry.jobs.keys spells them).

A write either lands whole or leaves nothing: FileStore writes a temporary file and renames it (the
temporary file removed when the write fails); S3Store sends a large body as a multipart upload,
which S3 assembles only when every part arrived (a failed upload is aborted, its parts removed).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from gantry.jobs.errors import InvalidInput, ServiceUnavailable

_CHUNK = 1 << 20  # bytes per read when an object is copied to a file
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # a control character, which no key may hold


class ObjectNotFound(KeyError):
    pass


class UnsafeKey(InvalidInput, ValueError):
    """An object key or file name from outside (a listing, a user's URI, a download) that would leave
    its prefix or folder: `..` or `.` segments, an absolute path, a backslash, an empty segment, a
    control character, or any of these percent-encoded. Still a ValueError, as it always was."""

    def __init__(self, key: str, why: str, *, field: str = "key") -> None:
        super().__init__(field, f"{key!r} {why}; refused")
        self.key = key


def _decoded_forms(key: str) -> list[str]:
    """`key` and each percent-decoding of it until nothing changes (`%252e` decodes twice)."""
    forms = [key]
    for _ in range(4):
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def check_key(key: str, *, field: str = "key", folder: bool = False) -> str:
    """`key` if it is a plain relative key: segments joined by `/`, none empty, `.` or `..`, no
    backslash or control character, not absolute, in its raw form and once percent-decoded.
    `folder=True` also allows one trailing `/` (a prefix to list) and the empty key (the root).

    Raises UnsafeKey (an InvalidInput naming `field` and the key) otherwise.
    """
    body = key[:-1] if folder and key.endswith("/") else key
    if folder and body == "":
        return key
    for decodings, form in enumerate(_decoded_forms(body)):
        if form == "":
            raise UnsafeKey(key, "is empty", field=field)
        if "\\" in form:
            raise UnsafeKey(key, "holds a backslash", field=field)
        if _CONTROL.search(form):
            raise UnsafeKey(key, "holds a control character", field=field)
        if form.startswith("/"):
            raise UnsafeKey(key, "is an absolute path", field=field)
        for segment in form.split("/"):
            if segment in ("", ".", ".."):
                what = "an empty segment" if segment == "" else f"a {segment!r} segment"
                encoded = " (percent-encoded)" if decodings else ""
                raise UnsafeKey(key, f"holds {what}{encoded}", field=field)
    return key


def safe_relative_key(key: str, prefix: str = "", *, field: str = "key") -> str:
    """The part of `key` after `prefix`, checked by `check_key`: what a listing of `prefix` may be
    turned into a local path or a key under another prefix with. Raises UnsafeKey when `key` is not
    under `prefix` or its rest would leave it."""
    if not key.startswith(prefix):
        raise UnsafeKey(key, f"is not under {prefix!r}", field=field)
    return check_key(key[len(prefix) :], field=field)


def safe_join(folder: Path, relative: str, *, field: str = "key") -> Path:
    """`folder / relative` for a checked relative key, refused (UnsafeKey) unless the result stays
    inside `folder` once resolved (a symbolic link inside `folder` counts as leaving it)."""
    check_key(relative, field=field)
    base = folder.resolve()
    path = (base / relative).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafeKey(relative, f"leaves the folder {folder}", field=field)
    return path


class ObjectStore(Protocol):
    root: str

    def put_bytes(self, key: str, data: bytes) -> str: ...
    def put_file(self, key: str, path: Path) -> str: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...


class FileStore:
    """A folder on a local or shared file system. Writes are atomic (temp file, then rename)."""

    def __init__(self, root: Path) -> None:
        self.path = root
        self.root = root.resolve().as_uri()

    def _path(self, key: str, *, folder: bool = False) -> Path:
        check_key(key, folder=folder)
        path = (self.path / key).resolve()
        if not path.is_relative_to(self.path.resolve()):
            raise UnsafeKey(key, "escapes the storage root")
        return path

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            # A full disk, a quota, a folder where the file goes: leave nothing half-written behind.
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.uri(key)

    def put_file(self, key: str, path: Path) -> str:
        """Object `key` from local file `path`, copied a chunk at a time, atomic as `put_bytes`."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.uri(key)

    def local_path(self, key: str) -> Path:
        """The file of object `key` (checked as every key is: never outside the root)."""
        return self._path(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The object's size in bytes (ObjectNotFound when there is none)."""
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.stat().st_size

    def delete(self, key: str) -> None:
        """Remove the object; nothing to do when it is not there."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.path.resolve()
        start = self._path(prefix, folder=True)
        folder = start if start.is_dir() else start.parent
        if not folder.exists():
            return []
        keys = [p.relative_to(base).as_posix() for p in folder.rglob("*") if p.is_file()]
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith(".tmp-"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3Store:
    """An S3 bucket (or a prefix in one). Credentials come from the usual AWS variables.

    A body of `multipart_bytes` or more (a large checkpoint) goes up as a multipart upload in parts
    of `part_bytes`, a few at once: one PUT is limited to 5 GB, and a part that fails is sent again
    by itself rather than the whole body. S3 assembles the object only when every part arrived;
    boto3 aborts an upload that failed, so no partial object is left (a bucket lifecycle rule
    `AbortIncompleteMultipartUpload` also clears the parts of a worker killed mid-upload)."""

    multipart_bytes = 64 << 20
    part_bytes = 16 << 20

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        multipart_bytes: int | None = None,
        part_bytes: int | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.multipart_bytes = multipart_bytes or self.multipart_bytes
        self.part_bytes = part_bytes or self.part_bytes
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5),
        )

    def _key(self, key: str, *, folder: bool = False) -> str:
        check_key(key, folder=folder)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, **kwargs):  # type: ignore[no-untyped-def]
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (EndpointConnectionError, NoCredentialsError) as exc:
            where = self.endpoint_url or "AWS"
            raise ServiceUnavailable(
                "object storage",
                f"cannot reach S3 at {where}: {type(exc).__name__}",
                transient=isinstance(exc, EndpointConnectionError),  # no credentials: waiting won't help
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(kwargs.get("Key", "")) from None
            if code == "NoSuchBucket":
                raise ServiceUnavailable("object storage", f"bucket {self.bucket!r} does not exist") from None
            raise

    def put_bytes(self, key: str, data: bytes) -> str:
        if len(data) < self.multipart_bytes:
            self._call(self.client.put_object, Key=self._key(key), Body=data)
            return self.uri(key)
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.multipart_bytes, multipart_chunksize=self.part_bytes, max_concurrency=4
        )
        self._call(self.client.upload_fileobj, Key=self._key(key), Fileobj=io.BytesIO(data), Config=config)
        return self.uri(key)

    def put_file(self, key: str, path: Path) -> str:
        """Object `key` from local file `path`, streamed (multipart above `multipart_bytes`)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.multipart_bytes, multipart_chunksize=self.part_bytes, max_concurrency=4
        )
        self._call(self.client.upload_file, Key=self._key(key), Filename=str(path), Config=config)
        return self.uri(key)

    def presigned_get(self, key: str, *, seconds: int, content_type: str | None = None) -> str:
        """A URL that reads object `key` without credentials for `seconds` (signed here, offline),
        its answer carrying `content_type` (objects are stored without one)."""
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        url: str = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        return url

    def get_bytes(self, key: str) -> bytes:
        return self._call(self.client.get_object, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Key=self._key(key))
        except ObjectNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """The object's size in bytes (ObjectNotFound when there is none)."""
        return int(self._call(self.client.head_object, Key=self._key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        """Remove the object; nothing to do when it is not there (S3 answers 204 either way)."""
        self._call(self.client.delete_object, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: dict[str, str] = {}
        strip = len(self.prefix) + 1 if self.prefix else 0
        while True:
            page = self._call(self.client.list_objects_v2, Prefix=self._key(prefix, folder=True), **token)
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


def _user_key(uri: str, field: str, *, endpoint_url: str | None) -> tuple[ObjectStore, str]:
    """`split_uri` for a user's S3 URI, its key checked (a folder's trailing `/` allowed)."""
    store, key = split_uri(uri, endpoint_url=endpoint_url)
    if key in ("", "/"):
        raise InvalidInput(field, f"{uri}: names a bucket, not an object or folder in it")
    check_key(key, field=field, folder=True)
    return store, key


def uri_exists(uri: str, *, endpoint_url: str | None = None) -> bool:
    """True when a file, a folder or (for S3) an object or prefix exists at `uri`."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        return path.expanduser().exists()
    if parsed.scheme != "s3":
        raise InvalidInput("dataset", f"{uri!r}: use a path, file:// or s3:// URI")
    store, key = _user_key(uri, "dataset", endpoint_url=endpoint_url)
    folder = key.rstrip("/") + "/"
    return (not key.endswith("/") and store.exists(key)) or bool(store.list(folder))


class _Budget:
    """What `fetch_to_local` may still write: files and bytes, each None for no limit."""

    def __init__(self, uri: str, field: str, max_files: int | None, max_bytes: int | None) -> None:
        self.uri, self.field, self.max_files, self.left = uri, field, max_files, max_bytes

    def check_files(self, count: int) -> None:
        if self.max_files is not None and count > self.max_files:
            raise InvalidInput(
                self.field,
                f"{self.uri}: {count:,} objects is over the limit of {self.max_files:,} (GANTRY_MAX_DATA_FILES)",
            )

    def take(self, key: str, size: int, limit: int | None) -> None:
        if self.left is not None:
            self.left -= size
            if self.left < 0:
                raise InvalidInput(
                    self.field,
                    f"{self.uri}: {key} takes the data past the limit of {limit:,} bytes (GANTRY_MAX_DATA_BYTES)",
                )


def _copy_object(store: ObjectStore, key: str, target: Path, budget: _Budget, limit: int | None) -> None:
    """Object `key` into file `target`, a chunk at a time (never whole in memory), within the budget."""
    if isinstance(store, S3Store):
        body: Any = store._call(store.client.get_object, Key=store._key(key))["Body"]
    elif isinstance(store, FileStore):
        try:
            body = store._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
    else:  # another ObjectStore: whole, as it gives it
        data = store.get_bytes(key)
        budget.take(key, len(data), limit)
        target.write_bytes(data)
        return
    try:
        with target.open("wb") as out:
            while chunk := body.read(_CHUNK):
                budget.take(key, len(chunk), limit)
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        body.close()


def fetch_to_local(
    uri: str,
    dest: Path,
    *,
    endpoint_url: str | None = None,
    field: str = "dataset",
    max_files: int | None = None,
    max_bytes: int | None = None,
) -> Path:
    """A local path for `uri`: paths and file:// as they are; S3 objects or prefixes downloaded
    into `dest`, streamed to disk.

    Every key of a prefix is checked (`safe_relative_key`): one that would leave the download's
    folder (`..`, absolute, backslash, empty or percent-encoded segments) is refused with
    InvalidInput(field, ...) naming it, before anything is downloaded; so is a prefix of more than
    `max_files` objects, or objects of more than `max_bytes` bytes in all.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)
        return path.expanduser().resolve()
    store, key = _user_key(uri, field, endpoint_url=endpoint_url)
    budget = _Budget(uri, field, max_files, max_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    if not key.endswith("/") and store.exists(key):
        target = safe_join(dest, key.rsplit("/", 1)[-1], field=field)
        _copy_object(store, key, target, budget, max_bytes)
        return target
    prefix = key.rstrip("/") + "/"
    # Keys that end in "/" are the empty "folder" markers S3 consoles make: nothing to download.
    keys = [k for k in store.list(prefix) if not k.endswith("/")]
    if not keys:
        raise InvalidInput(field, f"nothing at {uri}")
    budget.check_files(len(keys))
    folder = safe_join(dest, prefix.rstrip("/").rsplit("/", 1)[-1], field=field)
    targets = [safe_join(folder, safe_relative_key(k, prefix, field=field), field=field) for k in keys]
    for k, target in zip(keys, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_object(store, k, target, budget, max_bytes)
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
