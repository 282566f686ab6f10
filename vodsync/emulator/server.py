"""One HTTP port for the whole emulator: wire formats and routing, no service rules.

- `/` (any method, `Action` in the query or a form body): VOD RPC -> `VodModel.call`,
  flat JSON success and error bodies.
- `/<bucket>[/<key>]` (key percent-encoded): OSS path-style -> `OssStore`, XML bodies.
- `/_emulator/...`: the JSON control plane (state, calls, reset, faults, advance, sts); never
  counted, faulted or signed.

`Emulator` owns the lifecycle: it builds the clock, stores, auth and model, serves from
a background thread, and (with a data dir) saves a debounced snapshot after requests
and on stop, loading it again at start. The rules themselves live in auth.py, oss.py,
faults.py and vod.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ElementTree
from collections import Counter, deque
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from vodsync.emulator.auth import OssAuthorizer, RpcVerifier, StsIssuer
from vodsync.emulator.clock import Clock
from vodsync.emulator.errors import OssApiError, VodApiError
from vodsync.emulator.faults import CORRUPT, HOLD, RESET, SLOW, FaultInjector, FaultRule
from vodsync.emulator.oss import ObjectInfo, OssStore, etag_mode

API_VERSION = "2017-03-21"
SNAPSHOT_FILE = "state.json"
SNAPSHOT_FORMAT = 1
SAVE_INTERVAL = 0.2
DRAIN_LIMIT = 64 << 20  # unread request bodies up to this size are drained to keep the connection
MAX_RPC_URL = 32 * 1024  # a guess: the service documents no URL limit; this one is far above vodsync's
SMALL_BODY_LIMIT = 8 << 20  # RPC forms, control JSON, CompleteMultipartUpload XML
CALL_TIMES_KEPT = 100_000  # arrival times kept per call name (the newest), for `/_emulator/calls`

# Parameters that belong to the RPC envelope, not to the operation.
_RPC_ENVELOPE = frozenset(
    ["Action", "Version", "Format", "AccessKeyId", "Signature", "SignatureMethod", "SignatureType",
     "SignatureVersion", "SignatureNonce", "Timestamp", "SecurityToken"]
)


def _oss_request_id() -> str:
    return uuid.uuid4().hex[:24].upper()


def _rpc_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _iso_ms(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _xml(root: str, fields: Iterable[tuple[str, Any]], *children: str) -> bytes:
    inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in fields)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}{"".join(children)}</{root}>').encode()


class _BadRequest(Exception):
    pass


class _Dropped(Exception):
    """The connection was dropped on purpose (a `reset` fault)."""


class _Body:
    """The request body as a file-like (Content-Length or chunked), read at most once."""

    def __init__(self, rfile, headers) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._chunk_left = 0
        self._eof = False
        if self.chunked:
            self.length: int | None = None
        else:
            try:
                self.length = int(headers.get("Content-Length") or 0)
            except ValueError as exc:
                raise _BadRequest("bad Content-Length") from exc
            if self.length < 0:
                raise _BadRequest("bad Content-Length")
        self._left = self.length
        self._rate: int | None = None
        self._started = 0.0
        self._taken = 0
        self._corrupt = False

    def corrupt(self) -> None:
        """Flip the lowest bit of the next byte read (a `corrupt` fault: damage in transit)."""
        self._corrupt = True

    def pace(self, bytes_per_second: int) -> None:
        """Deliver the body no faster than `bytes_per_second`, as one TCP stream over a WAN does."""
        self._rate, self._started, self._taken = bytes_per_second, time.monotonic(), 0

    def _arrived(self, view: memoryview, n: int) -> None:
        """Every chunk of the body passes here, in place, on its way in: a `corrupt` fault, then pacing."""
        if self._corrupt and n:
            self._corrupt = False
            view[0] ^= 1
        if self._rate:
            self._taken += n
            ahead = self._taken / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)

    @property
    def done(self) -> bool:
        return self._eof if self.chunked else not self._left

    def read(self, n: int = 1 << 16) -> bytes:
        """Up to `n` bytes of the body (b"" at its end)."""
        buffer = bytearray(n)
        got = self.readinto(memoryview(buffer))
        del buffer[got:]
        return bytes(buffer)

    def readinto(self, view: memoryview) -> int:
        """Fill `view` with the body's next bytes (fewer at a chunk's or the body's end); 0 at the end.
        Large bodies are read this way into one reused buffer: no new 1 MiB object per chunk."""
        if self.chunked:
            return self._readinto_chunked(view)
        if not self._left:
            return 0
        got = self._rfile.readinto(view[: min(len(view), self._left)])
        if not got:  # the client went away mid-body
            self._left = 0
            return 0
        self._left -= got
        self._arrived(view, got)
        return got

    def _readinto_chunked(self, view: memoryview) -> int:
        if self._eof:
            return 0
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            try:
                self._chunk_left = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError as exc:
                raise _BadRequest("bad chunk size") from exc
            if self._chunk_left == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._eof = True
                return 0
        got = self._rfile.readinto(view[: min(len(view), self._chunk_left)])
        if not got:
            self._eof = True
            return 0
        self._chunk_left -= got
        if self._chunk_left == 0:
            self._rfile.readline(16)  # CRLF after the chunk
        self._arrived(view, got)
        return got

    def read_all(self, limit: int = SMALL_BODY_LIMIT) -> bytes:
        parts, total = [], 0
        while True:
            chunk = self.read(1 << 16)
            if not chunk:
                return b"".join(parts)
            total += len(chunk)
            if total > limit:
                raise _BadRequest("request body too large")
            parts.append(chunk)

    def drain(self, limit: int) -> bool:
        """Discard what is left; False if more than `limit` bytes remain (connection must close)."""
        if not self.chunked and self._left is not None and self._left > limit:
            return False
        total, scratch = 0, memoryview(bytearray(1 << 20))
        while not self.done:
            got = self.readinto(scratch)
            if not got:
                break
            total += got
            if total > limit:
                return False
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: oss2 and the core SDK reuse connections
    server_version = "vodsync-emulator"
    sys_version = ""
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    rbufsize = 1 << 16
    timeout = 300  # idle keep-alive connections eventually free their thread

    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # stdout belongs to the CLI's one line; tests read call counts from /_emulator/state

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = lambda self: self._dispatch()  # noqa: E731

    # ------------------------------------------------------------------ plumbing

    @property
    def app(self) -> Emulator:
        return self.server.app

    def _send(self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        self.send_response(status)
        has_length = False
        for name, value in headers:
            has_length = has_length or name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, [("Content-Type", "application/json;charset=utf-8")], body)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Dropped

    def _fault(self, call: str) -> FaultRule | None:
        """Apply slow/reset rules here; return an error rule for the caller to render."""
        rule = self.app.faults.pick(call)
        if rule is None:
            return None
        if rule.delay_ms:
            time.sleep(rule.delay_ms / 1000)
        if rule.error == RESET:
            self._drop()
        if rule.error == SLOW:
            if rule.bytes_per_second and self._body is not None:
                self._body.pace(rule.bytes_per_second)
            return None
        if rule.error == CORRUPT:
            if self._body is not None:
                self._body.corrupt()
            return None
        if rule.error == HOLD:
            self.app.faults.hold()
            return None
        return rule

    def _dispatch(self) -> None:
        self._body: _Body | None = None
        self._oss_rid = _oss_request_id()
        kind = "rpc"
        try:
            split = urlsplit(self.path)
            path = split.path or "/"
            kind = "control" if path.startswith("/_emulator") else "rpc" if path == "/" else "oss"
            self._body = _Body(self.rfile, self.headers)
            if kind == "control":
                self._control(path.removeprefix("/_emulator").strip("/"), split.query)
            elif kind == "rpc":
                self._rpc(split.query)
            else:
                self._oss(path, split.query)
        except _Dropped:
            return
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            return
        except _BadRequest as exc:
            self.close_connection = True  # the framing may be lost
            self._error(kind, 400, "InvalidArgument" if kind == "oss" else "InvalidParameter", str(exc))
        except Exception:
            traceback.print_exc(file=sys.stderr)
            try:
                self._error(kind, 500, "InternalError", "The request processing has failed due to some "
                            "unknown error, exception or failure.")
            except OSError:
                self.close_connection = True
        if self._body is not None and not self._body.done:
            try:
                if not self._body.drain(DRAIN_LIMIT):
                    self.close_connection = True
            except (OSError, _BadRequest):
                self.close_connection = True

    def _error(self, kind: str, status: int, code: str, message: str, ec: str = "0000-00000000") -> None:
        if kind == "oss":
            self._oss_error(OssApiError(code, message, status, ec))
        elif kind == "rpc":
            self._rpc_error(status, code, message)
        else:
            self._send_json(status, {"error": message, "code": code})

    # ------------------------------------------------------------------ VOD RPC

    def _rpc_error(self, status: int, code: str, message: str) -> None:
        region = self.app.region
        self._send_json(status, {
            "RequestId": _rpc_request_id(),
            "HostId": f"vod.{region}.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={quote(code)}&product=vod",
        })

    def _rpc(self, query: str) -> None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        raw = self._body.read_all()
        if raw and self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        action = params.get("Action", "")
        app = self.app
        app.count(action or "(no Action)")
        rule = self._fault(action)
        if rule is not None:
            return self._rpc_error(rule.http_status, rule.error, rule.error_message)
        if len(self.path) > MAX_RPC_URL:  # every RPC parameter travels in the URL (vod-api.md §1)
            return self._rpc_error(414, "RequestURITooLong", f"The request URL exceeds {MAX_RPC_URL} bytes.")
        try:
            app.rpc.verify(self.command, params)
            if not action:
                raise VodApiError("MissingParameter", 'The input parameter "Action" that is mandatory for '
                                  "processing this request is not supplied.", 400)
            if params.get("Version", API_VERSION) != API_VERSION:
                raise VodApiError("InvalidVersion", "Specified parameter Version is not valid.", 400)
            result = app.model.call(action, {k: v for k, v in params.items() if k not in _RPC_ENVELOPE})
        except VodApiError as err:
            return self._rpc_error(err.status, err.code, err.message)
        finally:
            app.mark_dirty()
        body = dict(result)
        body.setdefault("RequestId", _rpc_request_id())
        self._send_json(200, body)

    # ------------------------------------------------------------------ OSS

    def _oss_headers(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [("x-oss-request-id", self._oss_rid), *extra]

    def _oss_error(self, err: OssApiError, bucket: str = "") -> None:
        host = f"{bucket}.oss-{self.app.region}.aliyuncs.com" if bucket else f"oss-{self.app.region}.aliyuncs.com"
        body = _xml("Error", [("Code", err.code), ("Message", err.message), ("RequestId", self._oss_rid),
                              ("HostId", host), ("EC", err.ec)])
        headers = self._oss_headers(("Content-Type", "application/xml"), ("x-oss-ec", err.ec))
        if self.command == "HEAD":  # no body: OSS sends the error document base64'd in a header
            headers.append(("x-oss-err", base64.b64encode(body).decode("ascii")))
            body = b""
        self._send(err.status, headers, body)

    @staticmethod
    def _object_headers(info: ObjectInfo) -> list[tuple[str, str]]:
        return [
            ("ETag", f'"{info.etag}"'),
            ("x-oss-hash-crc64ecma", str(info.crc64)),
            ("Last-Modified", formatdate(info.last_modified, usegmt=True)),
            ("Content-Type", info.content_type),
            ("x-oss-object-type", info.object_type),
            ("x-oss-storage-class", "Standard"),
            ("Accept-Ranges", "bytes"),
        ]

    def _oss(self, path: str, query: str) -> None:
        raw_bucket, _, raw_key = path[1:].partition("/")
        bucket, key = unquote(raw_bucket), unquote(raw_key)
        params = dict(parse_qsl(query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in self.headers.items()}
        method = self.command
        app = self.app
        app.count(f"oss:{method}")
        rule = self._fault(f"oss:{method}")
        if rule is not None:
            return self._oss_error(OssApiError(rule.error, rule.error_message, rule.http_status), bucket)
        try:
            app.oss_auth.authorize(method, headers, bucket, key, params)
            if not bucket:
                raise OssApiError("NotImplemented", "The service-level API is not emulated.", 501)
            if key:
                self._oss_object(method, bucket, key, params, headers)
            else:
                self._oss_bucket(method, bucket, params)
        except OssApiError as err:
            self._oss_error(err, bucket)
        finally:
            if method not in ("GET", "HEAD"):
                app.mark_dirty()

    def _oss_bucket(self, method: str, bucket: str, params: dict[str, str]) -> None:
        store = self.app.oss
        if method == "PUT" and not params:
            store.ensure_bucket(bucket)
            return self._send(200, self._oss_headers(("Location", f"/{bucket}")))
        if method == "GET" and "uploads" in params:
            return self._list_uploads(bucket, params)
        if method == "GET" and not set(params) - {"prefix", "marker", "max-keys", "delimiter", "encoding-type"}:
            return self._list_objects(bucket, params)
        raise OssApiError("NotImplemented", "This bucket operation is not emulated.", 501)

    def _oss_object(self, method: str, bucket: str, key: str, params: dict[str, str], headers: dict) -> None:
        store = self.app.oss
        body = self._body
        if method == "PUT" and "uploadId" in params:
            try:
                number = int(params.get("partNumber", ""))
            except ValueError as exc:
                raise OssApiError("InvalidArgument", "Part number must be an integer.", 400) from exc
            part = store.upload_part(params["uploadId"], bucket, key, number, body, body.length,
                                     content_md5=headers.get("content-md5"))
            return self._send(200, self._oss_headers(("ETag", f'"{part.etag}"'),
                                                     ("x-oss-hash-crc64ecma", str(part.crc64))))
        if method == "PUT":
            if "x-oss-copy-source" in headers:
                raise OssApiError("NotImplemented", "CopyObject is not emulated.", 501)
            info = store.put_stream(bucket, key, body, body.length,
                                    content_type=headers.get("content-type") or "application/octet-stream",
                                    content_md5=headers.get("content-md5"))
            return self._send(200, self._oss_headers(("ETag", f'"{info.etag}"'),
                                                     ("x-oss-hash-crc64ecma", str(info.crc64))))
        if method == "POST" and "uploads" in params:
            upload = store.initiate_multipart(bucket, key, headers.get("content-type") or "application/octet-stream")
            xml = _xml("InitiateMultipartUploadResult",
                       [("Bucket", bucket), ("Key", key), ("UploadId", upload.upload_id)])
            return self._send(200, self._oss_headers(("Content-Type", "application/xml")), xml)
        if method == "POST" and "uploadId" in params:
            return self._complete(bucket, key, params["uploadId"], headers)
        if method == "GET" and "uploadId" in params:
            return self._list_parts(bucket, key, params)
        if method == "DELETE" and "uploadId" in params:
            store.abort_multipart(params["uploadId"], bucket, key)
            return self._send(204, self._oss_headers())
        if method == "DELETE":
            store.delete(bucket, key)
            return self._send(204, self._oss_headers())
        if method in ("GET", "HEAD"):
            return self._get_object(bucket, key, headers)
        raise OssApiError("NotImplemented", "This object operation is not emulated.", 501)

    def _get_object(self, bucket: str, key: str, headers: dict) -> None:
        info, reader = self.app.oss.open(bucket, key)
        with reader:
            start, end, status = 0, info.size - 1, 200
            wanted = _parse_range(headers.get("range", ""), info.size)
            extra = []
            if wanted is not None:
                start, end = wanted
                status = 206
                extra.append(("Content-Range", f"bytes {start}-{end}/{info.size}"))
            length = max(0, end - start + 1)
            self._send(status, self._oss_headers(*self._object_headers(info), *extra,
                                                 ("Content-Length", str(length))))
            if self.command == "GET" and length:
                for f, offset, count in reader.ranges(start, length):
                    self.connection.sendfile(f, offset=offset, count=count)

    def _complete(self, bucket: str, key: str, upload_id: str, headers: dict) -> None:
        store = self.app.oss
        raw = self._body.read_all()
        if headers.get("x-oss-complete-all", "").lower() == "yes":
            parts = [(p.number, p.etag) for p in store.list_parts(upload_id, bucket, key)]
        else:
            try:
                root = ElementTree.fromstring(raw)
                parts = [(int(p.findtext("PartNumber", "")), p.findtext("ETag", ""))
                         for p in root.findall("Part")]
            except (ElementTree.ParseError, ValueError) as exc:
                raise OssApiError("MalformedXML", "The XML you provided was not well-formed.", 400,
                                  "0042-00000212") from exc
        info = store.complete_multipart(upload_id, bucket, key, parts)
        xml = _xml("CompleteMultipartUploadResult", [("Location", f"/{bucket}/{quote(key)}"), ("Bucket", bucket),
                                                     ("Key", key), ("ETag", f'"{info.etag}"')])
        self._send(200, self._oss_headers(("Content-Type", "application/xml"), ("ETag", f'"{info.etag}"'),
                                          ("x-oss-hash-crc64ecma", str(info.crc64))), xml)

    def _list_parts(self, bucket: str, key: str, params: dict) -> None:
        upload_id = params["uploadId"]
        marker = _int_param(params, "part-number-marker", 0)
        max_parts = min(max(_int_param(params, "max-parts", 1000), 1), 1000)
        after = [p for p in self.app.oss.list_parts(upload_id, bucket, key) if p.number > marker]
        page = after[:max_parts]
        next_marker = page[-1].number if page else marker
        parts = "".join(
            f"<Part><PartNumber>{p.number}</PartNumber><LastModified>{_iso_ms(p.last_modified)}</LastModified>"
            f"<ETag>&quot;{p.etag}&quot;</ETag><HashCrc64ecma>{p.crc64}</HashCrc64ecma><Size>{p.size}</Size></Part>"
            for p in page
        )
        xml = _xml("ListPartsResult", [("Bucket", bucket), ("Key", key), ("UploadId", upload_id),
                                       ("PartNumberMarker", marker), ("NextPartNumberMarker", next_marker),
                                       ("MaxParts", max_parts), ("IsTruncated", str(len(after) > max_parts).lower())],
                   parts)
        self._send(200, self._oss_headers(("Content-Type", "application/xml")), xml)

    def _list_uploads(self, bucket: str, params: dict) -> None:
        prefix = params.get("prefix", "")
        key_marker, id_marker = params.get("key-marker", ""), params.get("upload-id-marker", "")
        limit = min(max(_int_param(params, "max-uploads", 1000), 1), 1000)
        encode = _key_encoder(params)
        after = [u for u in self.app.oss.list_uploads(bucket)
                 if u.key.startswith(prefix) and (u.key, u.upload_id) > (key_marker, id_marker)
                 and (not key_marker or u.key >= key_marker)]
        page, truncated = after[:limit], len(after) > limit
        uploads = "".join(
            f"<Upload><Key>{escape(encode(u.key))}</Key><UploadId>{u.upload_id}</UploadId>"
            f"<StorageClass>Standard</StorageClass><Initiated>{_iso_ms(u.initiated)}</Initiated></Upload>"
            for u in page
        )
        fields = [("Bucket", bucket)]
        if params.get("encoding-type") == "url":
            fields.append(("EncodingType", "url"))
        fields += [("KeyMarker", encode(key_marker)), ("UploadIdMarker", id_marker),
                   ("NextKeyMarker", encode(page[-1].key) if truncated else ""),
                   ("NextUploadIdMarker", page[-1].upload_id if truncated else ""),
                   ("Delimiter", ""), ("Prefix", encode(prefix)), ("MaxUploads", limit),
                   ("IsTruncated", str(truncated).lower())]
        xml = _xml("ListMultipartUploadsResult", fields, uploads)
        self._send(200, self._oss_headers(("Content-Type", "application/xml")), xml)

    def _list_objects(self, bucket: str, params: dict) -> None:
        store = self.app.oss
        if not store.has_bucket(bucket):
            raise OssApiError("NoSuchBucket", "The specified bucket does not exist.", 404, "0015-00000101")
        prefix, marker, delimiter = params.get("prefix", ""), params.get("marker", ""), params.get("delimiter", "")
        limit = min(max(_int_param(params, "max-keys", 100), 1), 1000)
        encode = _key_encoder(params)
        entries: list[tuple[str, ObjectInfo | None]] = []
        seen_prefixes: set[str] = set()
        truncated = False
        for b, key, info in store.objects():
            if b != bucket or not key.startswith(prefix) or key <= marker:
                continue
            if delimiter and delimiter in key[len(prefix):]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                if common in seen_prefixes or common <= marker:
                    continue
                entry: tuple[str, ObjectInfo | None] = (common, None)
            else:
                entry = (key, info)
            if len(entries) == limit:
                truncated = True
                break
            if entry[1] is None:
                seen_prefixes.add(entry[0])
            entries.append(entry)
        contents = "".join(
            f"<Contents><Key>{escape(encode(k))}</Key><LastModified>{_iso_ms(i.last_modified)}</LastModified>"
            f"<ETag>&quot;{i.etag}&quot;</ETag><Type>{i.object_type}</Type><Size>{i.size}</Size>"
            f"<StorageClass>Standard</StorageClass></Contents>"
            for k, i in entries if i is not None
        )
        prefixes = "".join(f"<CommonPrefixes><Prefix>{escape(encode(k))}</Prefix></CommonPrefixes>"
                           for k, i in entries if i is None)
        fields = [("Name", bucket)]
        if params.get("encoding-type") == "url":
            fields.append(("EncodingType", "url"))
        fields += [("Prefix", encode(prefix)), ("Marker", encode(marker)), ("MaxKeys", limit),
                   ("Delimiter", encode(delimiter)), ("IsTruncated", str(truncated).lower())]
        if truncated:
            fields.append(("NextMarker", encode(entries[-1][0])))
        xml = _xml("ListBucketResult", fields, contents, prefixes)
        self._send(200, self._oss_headers(("Content-Type", "application/xml")), xml)

    # ------------------------------------------------------------------ control plane

    def _control(self, name: str, query: str = "") -> None:
        app, method = self.app, self.command
        raw = self._body.read_all()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return self._send_json(400, {"error": "body is not JSON"})
        if not isinstance(body, dict):
            return self._send_json(400, {"error": "body must be a JSON object"})
        try:
            if (method, name) == ("GET", "state"):
                return self._send_json(200, app.state())
            if (method, name) == ("GET", "calls"):
                action = dict(parse_qsl(query)).get("action")
                return self._send_json(200, app.call_times(action) if action else app.call_times())
            if (method, name) == ("POST", "reset"):
                app.reset()
                return self._send_json(200, {"ok": True})
            if (method, name) == ("GET", "faults"):
                return self._send_json(200, {"rules": app.faults.rules()})
            if (method, name) == ("POST", "faults"):
                rules = body.get("rules", [])
                if not isinstance(rules, list):
                    raise ValueError("'rules' must be a list")
                app.set_faults(rules, seed=body.get("seed"))
                return self._send_json(200, {"rules": app.faults.rules()})
            if (method, name) == ("POST", "advance"):
                seconds = body.get("seconds")
                if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                    raise ValueError("'seconds' must be a number")
                now = app.advance(seconds, client_follows=bool(body.get("client_follows", True)))
                return self._send_json(200, {"now": now})
            if (method, name) == ("POST", "video-status"):
                video_id, status = body.get("video_id"), body.get("status")
                if not isinstance(video_id, str) or not isinstance(status, str | None):
                    raise ValueError("'video_id' (a string) and 'status' (a string or null) are required")
                app.model.set_video_status(video_id, status)
                app.mark_dirty()
                return self._send_json(200, {"ok": True})
            if (method, name) == ("POST", "sts"):
                bucket, key = body.get("bucket"), body.get("key")
                if not isinstance(bucket, str) or not isinstance(key, str):
                    raise ValueError("'bucket' and 'key' strings are required")
                return self._send_json(200, app.sts.mint(bucket, key, prefix=bool(body.get("prefix", False))))
        except ValueError as exc:
            return self._send_json(400, {"error": str(exc)})
        self._send_json(404, {"error": f"no control endpoint {method} /_emulator/{name}"})



def _regular_files(top: Path) -> list[Path]:
    """Regular files under `top`, not following symbolic links (to files or directories)."""
    found = []
    for dirpath, _dirs, files in os.walk(top, followlinks=False):
        for name in files:
            path = Path(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path)
    return found

def _int_param(params: dict, name: str, default: int) -> int:
    try:
        return int(params.get(name) or default)
    except ValueError as exc:
        raise OssApiError("InvalidArgument", f"{name} must be an integer.", 400) from exc


def _key_encoder(params: dict) -> Callable[[str], str]:
    if params.get("encoding-type") == "url":
        return lambda s: quote(s, safe="")
    return lambda s: s


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single `bytes=a-b` / `bytes=a-` / `bytes=-n` range; anything else means the whole object."""
    if not header.startswith("bytes=") or "," in header or size == 0:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None  # OSS ignores an unsatisfiable range and returns the whole object
    return start, min(end, size - 1)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: Emulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        """Hang up on keep-alive clients so a stopped emulator really stops answering."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # a client hanging up is not worth a traceback
        super().handle_error(request, client_address)


ModelFactory = Callable[..., Any]


class Emulator:
    """A VOD + OSS emulator on one port, served from a background thread.

    `with Emulator() as emu:` or `emu = Emulator().start()`; `emu.url` is the endpoint.
    The in-process helpers (`state`, `reset`, `advance`, `set_faults`, `calls`, `call_times`) do what
    the `/_emulator/` control plane does.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | os.PathLike | None = None,
        access_key_id: str = "emulator",
        access_key_secret: str = "emulator-secret",
        sts_ttl: int = 3000,
        transcode_seconds: float = 0,
        url_job_seconds: float = 0,
        region: str = "cn-shanghai",
        *,
        etags: str = "md5",
        model_factory: ModelFactory | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sts_ttl = sts_ttl
        self.transcode_seconds = transcode_seconds
        self.url_job_seconds = url_job_seconds
        self.region = region
        self.etags = etag_mode(etags)  # "crc64": cheap ETags for benchmarks (see OssStore)
        self._model_factory = model_factory
        self._server: _HttpServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._dirty = threading.Event()
        self._save_lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._call_times: dict[str, deque[float]] = {}
        self._calls_lock = threading.Lock()
        self._root: Path | None = None
        self._owns_root = False
        self.faults = FaultInjector()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where clients reach this emulator (what UploadAddress.Endpoint points at)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        if self.data_dir is not None:
            self._root, self._owns_root = self.data_dir, False
            self._root.mkdir(parents=True, exist_ok=True)
        else:
            self._root, self._owns_root = Path(tempfile.mkdtemp(prefix="vodsync-emulator-")), True
        try:
            self._start_in(self._root)
        except BaseException:
            if self._server is not None:
                self._server.server_close()
                self._server = None
            if self._owns_root:
                shutil.rmtree(self._root, ignore_errors=True)
            raise
        return self

    def _start_in(self, root: Path) -> None:
        saved = self._load_snapshot()

        self.clock = Clock(float(saved.get("clock_offset", 0.0)))
        self.oss = OssStore(root / "oss", self.clock, etags=self.etags)
        self.sts = StsIssuer(self.clock, self.sts_ttl, self.region)
        self.rpc = RpcVerifier(self.clock, self.access_key_id, self.access_key_secret)
        self.oss_auth = OssAuthorizer(self.clock, self.access_key_id, self.access_key_secret, self.sts)
        if saved:
            self.oss.restore(saved.get("oss", {}))
            self.sts.restore(saved.get("sts", {}))
            self.rpc.followed_seconds = float(saved.get("client_followed_seconds", 0.0))
            # before the server and the URL jobs start: a restored job may download from them
            self.oss_auth.public_buckets.update(saved.get("public_buckets", ()))

        self._server = _HttpServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        factory = self._model_factory
        if factory is None:
            from vodsync.emulator.vod import VodModel

            factory = VodModel
        self.model = factory(clock=self.clock, oss=self.oss, sts=self.sts, endpoint=self.endpoint,
                             transcode_seconds=self.transcode_seconds, url_job_seconds=self.url_job_seconds,
                             region=self.region, public_buckets=self.oss_auth.public_buckets)
        if saved.get("vod"):
            self.model.restore(saved["vod"])

        self._stopping.clear()
        serve = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                 name="vodsync-emulator", daemon=True)
        serve.start()
        self._threads = [serve]
        if self.data_dir is not None:
            saver = threading.Thread(target=self._save_loop, name="vodsync-emulator-save", daemon=True)
            saver.start()
            self._threads.append(saver)

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None
        try:
            self.model.close()
        finally:
            if self.data_dir is not None:
                self._save()
            if self._owns_root and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ persistence

    def _load_snapshot(self) -> dict:
        path = self._root / SNAPSHOT_FILE if self.data_dir is not None else None
        if path is None or not path.exists():
            return {}
        data = json.loads(path.read_text("utf-8"))
        if data.get("format") != SNAPSHOT_FORMAT:
            raise RuntimeError(f"{path}: unknown snapshot format {data.get('format')!r}")
        return data

    def mark_dirty(self) -> None:
        self._dirty.set()

    def _save_loop(self) -> None:
        while not self._stopping.wait(SAVE_INTERVAL):
            if self._dirty.is_set():
                self._save()

    def _save(self) -> None:
        with self._save_lock:
            self._dirty.clear()
            try:
                data = {
                    "format": SNAPSHOT_FORMAT,
                    "clock_offset": self.clock.offset,
                    "client_followed_seconds": self.rpc.followed_seconds,
                    "vod": self.model.snapshot(),
                    "oss": self.oss.snapshot(),
                    "sts": self.sts.snapshot(),
                    "public_buckets": sorted(self.oss_auth.public_buckets),  # a bucket's ACL persists
                }
                target = self._root / SNAPSHOT_FILE
                tmp = target.with_name(f".{SNAPSHOT_FILE}.{os.getpid()}.tmp")
                # It holds the minted STS secrets: owner-only, from the first byte.
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                os.fchmod(fd, 0o600)  # a temp file left by a killed run keeps its old mode otherwise
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(data))
                os.replace(tmp, target)
            except Exception:
                traceback.print_exc(file=sys.stderr)
                self._dirty.set()

    # ------------------------------------------------------------------ control plane

    def publish_directory(self, root: str | os.PathLike) -> list[str]:
        """Serve `root/<bucket>/<key>` files as public-read buckets; returns the bucket names.

        This seeds the objects an offline demo points at: sources for URL ingests
        (anyone may GET them, as from a CDN) and objects to register. The directory
        comes with the manifests, so symbolic links are skipped, never followed: a
        link to a private file must not make it public.
        """
        root = Path(root)
        if root.is_symlink():
            return []
        buckets = []
        for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            bucket = bucket_dir.name
            self.oss.ensure_bucket(bucket)
            for path in sorted(_regular_files(bucket_dir)):
                key = path.relative_to(bucket_dir).as_posix()
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                except OSError:
                    continue  # swapped for a link (or removed) since the walk
                with os.fdopen(fd, "rb") as f:
                    info = os.fstat(f.fileno())
                    if not stat.S_ISREG(info.st_mode):
                        continue
                    existing = self.oss.head(bucket, key)
                    if existing is None or existing.size != info.st_size:
                        self.oss.put_stream(bucket, key, f, info.st_size)
            self.oss_auth.public_buckets.add(bucket)
            buckets.append(bucket)
        self.mark_dirty()
        return buckets

    def count(self, call: str) -> None:
        at = self.clock.now()
        with self._calls_lock:
            self._calls[call] += 1
            self._call_times.setdefault(call, deque(maxlen=CALL_TIMES_KEPT)).append(at)

    def calls(self) -> dict[str, int]:
        with self._calls_lock:
            return dict(self._calls)

    def call_times(self, call: str | None = None) -> Any:
        """When (emulator clock, seconds since the epoch) each request of `call` arrived, oldest
        first: a list; without `call`, a mapping of every call name to its list."""
        with self._calls_lock:
            if call is not None:
                return list(self._call_times.get(call, ()))
            return {name: list(times) for name, times in self._call_times.items()}

    def state(self) -> dict:
        objects = [{"bucket": b, "key": k, "size": i.size, "etag": i.etag, "crc64": i.crc64}
                   for b, k, i in self.oss.objects()]
        uploads = [{"bucket": u.bucket, "key": u.key, "upload_id": u.upload_id, "initiated": u.initiated,
                    "parts": len(u.parts)}
                   for u in self.oss.list_uploads()]
        return {**self.model.snapshot(), "objects": objects, "multipart_uploads": uploads,
                "calls": self.calls(), "now": self.clock.now()}

    def reset(self) -> None:
        """Back to an empty account at real time: media, objects, uploads, tokens, faults, counts."""
        self.faults.clear()
        self.clock.rewind()
        self.rpc.reset()
        self.model.reset()
        self.oss.reset()
        self.sts.reset()
        with self._calls_lock:
            self._calls.clear()
            self._call_times.clear()
        self.mark_dirty()

    def advance(self, seconds: float, *, client_follows: bool = True) -> float:
        """Move emulator time forward; returns the new `now`.

        By default the clients' clocks are taken to move too (RPC timestamps stay valid);
        `client_follows=False` leaves them behind, so signed RPC calls look stale.
        """
        self.clock.advance(seconds)
        if client_follows:
            self.rpc.followed_seconds += seconds
        self.mark_dirty()
        return self.clock.now()

    def set_faults(self, rules: list[dict], seed: int | None = None) -> None:
        self.faults.set_rules(rules, seed=seed)
