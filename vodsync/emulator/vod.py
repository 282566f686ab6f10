"""The emulated VOD account: `VodModel.call(action, params) -> response body`.

Owns the media of one account (videos, images, attached media), URL upload jobs,
the VOD storage bucket, upload tickets (UploadAddress/UploadAuth) and every VOD
operation vodsync uses, with the real parameter names, limits, error codes and
response shapes of vod-api.md. No HTTP here: `server.py` turns requests into
`call()` and `VodApiError` into error bodies.

Statuses are computed lazily from timestamps and the emulator clock, so moving the
clock (`/_emulator/advance`) is all it takes to finish a transcode. A video leaves
`Uploading` when the OSS store tells our listener its object is complete.

Concurrency: one lock guards all state. OSS calls (head, delete) and STS minting
happen outside it, and URL downloads run in a thread pool without it, so a slow
source never blocks the API.

Choices on points vod-api.md leaves unverified (see also media.py and urljobs.py):
- A duplicate ReferenceId is 400 `InvalidParameter.ReferenceId` "... already exists".
- TemplateGroupId: `VOD_NO_TRANSCODE` or any 32-hex id is accepted; anything else is
  404 `InvalidTemplateGroupId.NotFound`. WorkflowId is accepted as given and always transcodes.
- RefreshUploadVideo of a video whose object already landed puts it back to
  `Uploading` at once; the next object that lands restarts the transcode.
  Any object landing on a media's key counts as a (re)upload.
- StorageLocation, when passed, must be this account's; otherwise 404 `InvalidStorage.NotFound`.
- Over-limit lists: VideoIds/ReferenceIds (Get/Update/Delete video) -> `VideoIdsExceededMax`;
  the others -> `InvalidParameter.<Param>`. A SessionId reused within 10 minutes ->
  400 `InvalidParameter.SessionId`.
- SearchMedia (vod-api.md §00): without `Fields` each result is only MediaType, MediaId
  and CreationTime; with `Fields`, the media's view (`Video`, `Image`, ...) holds exactly
  the fields asked for. ReferenceId and UserData are neither searchable nor returnable:
  asking for them, or for any field this type does not return, is 400
  `InvalidParameter.Fields` / `InvalidParameter.Match` (a guess: the docs only say they are
  not offered). `Status` supports only `Status in (...)`. `Title = 'x'` is a
  case-insensitive substring match (VOD's title search is fuzzy, so callers must filter
  exactly themselves); other fields match exactly. Searchable: Title, Description, Status
  (in), MediaId/VideoId/ImageId, CateId, Tags, AppId, StorageLocation, Type/ImageType,
  CreationTime = ('from','to').
  SearchType video lists non-audio videos, audio lists videos whose file is audio.
  ScrollToken is an opaque offset token; PageNo paging stops at 5,000 results.
- RegisterMedia: image extensions register as images (ImageType default); other
  non-media extensions and missing objects go to FailedFileURLs. Registering a key
  that already belongs to a media returns that media with NewRegister false.
- UpdateImageInfos accepts UpdateContent both as a list and as {"UpdateContent": [...]}.
- An empty Title, Description, Tags, CoverURL or CateId(s) in an update is
  `InvalidParameter.<Field>` (clearing is not documented); an empty UserData clears it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from vodsync.emulator.errors import VodApiError
from vodsync.emulator.media import (
    ATTACHED_EXTS,
    AUDIO_EXTS,
    DEFAULT_APP_ID,
    IMAGE_EXTS,
    IMAGE_TYPES,
    NO_TRANSCODE,
    VIDEO_EXTS,
    VIDEO_STATUSES,
    AttachedMedia,
    Image,
    Media,
    Video,
    check_cate_id,
    check_description,
    check_media_file_name,
    check_reference_id,
    check_tags,
    check_template_group_id,
    check_title,
    ext_of,
    invalid,
    is_playlist_key,
    iso,
    missing,
    parse_iso,
    playlist_segments,
    require,
    segment_prefix,
    split_ids,
)
from vodsync.emulator.urljobs import JobFailed, UrlJob, download_into

MAX_IDS = 20
MAX_URL_UPLOADS = 20
MAX_URL_QUERIES = 10
MAX_REGISTER = 10
MAX_PAGE_SIZE = 100
MAX_PAGED_RESULTS = 5000
SESSION_WINDOW = 600.0

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")
_REAL_OSS_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9-]{1,62})\.oss-[a-z0-9-]+\.aliyuncs\.com$")


class _ChunkFile(io.RawIOBase):
    """Chunks as a readable file, for `put_stream`."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _new_id() -> str:
    return uuid.uuid4().hex


def _b64json(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode("utf-8")).decode("ascii")


def _video_not_found() -> VodApiError:
    return VodApiError("InvalidVideo.NotFound", "The video does not exist.", 404)


def _other_scheme(url: str) -> str:
    """RegisterMedia's answer names the file with the other scheme (vod-api.md §00 says the
    scheme may differ; always differing is the emulator's stricter choice)."""
    scheme, sep, rest = url.partition("://")
    return {"http": "https", "https": "http"}.get(scheme.lower(), scheme) + sep + rest


def _refuse_clearing(changes: dict[str, Any], names: tuple[str, ...]) -> None:
    """An empty value in an update is refused: the reference documents passed fields as set
    and gives no way to empty one (a guess, the stricter reading of an undocumented "")."""
    for name in names:
        if name in changes and changes[name] in ("", None):
            raise invalid(name, "An empty value does not clear the field.")


def _no_such_resource() -> VodApiError:
    return VodApiError("NoSuchResource", "The specified resource does not exist.", 404)


def _parse_json(params: dict[str, str], name: str) -> Any:
    raw = require(params, name)
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid(name, "It is not valid JSON.") from None


def _check_user_data(value: str) -> str:
    try:
        parsed = json.loads(value)
    except ValueError:
        raise invalid("UserData", "It must be a JSON object.") from None
    if not isinstance(parsed, dict):
        raise invalid("UserData", "It must be a JSON object.")
    extend = parsed.get("Extend")
    if extend is not None and len(json.dumps(extend, ensure_ascii=False, separators=(",", ":")).encode()) > 512:
        raise invalid("UserData", "Extend exceeds 512 bytes.")
    return value


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, "It must be an integer.") from None


class VodModel:
    """One emulated VOD account; `call()` is its whole API."""

    def __init__(
        self,
        clock: Any,
        oss: Any,
        sts: Any,
        endpoint: str,
        transcode_seconds: float = 2.0,
        url_job_seconds: float = 2.0,
        region: str = "cn-shanghai",
        download_workers: int = 4,
        public_buckets: Collection[str] = frozenset(),
    ) -> None:
        self.clock = clock
        self.oss = oss
        self.public_buckets = public_buckets  # the OSS side's public-read buckets (a live view)
        self.sts = sts
        self.endpoint = endpoint.rstrip("/")
        self.transcode_seconds = float(transcode_seconds)
        self.url_job_seconds = float(url_job_seconds)
        self.region = region
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=download_workers, thread_name_prefix="vod-url-job")
        self.bucket = f"outin-{_new_id()}"
        self._generation = 0
        self._clear()
        self.oss.ensure_bucket(self.bucket)
        self.oss.add_listener(self._on_object)
        self._ops: dict[str, Callable[[dict[str, str]], dict[str, Any]]] = {
            name[4:]: getattr(self, name) for name in dir(self) if name.startswith("_op_")
        }

    @property
    def storage_location(self) -> str:
        return f"{self.bucket}.oss-{self.region}.aliyuncs.com"

    def _clear(self) -> None:
        self._videos: dict[str, Video] = {}
        self._images: dict[str, Image] = {}
        self._attached: dict[str, AttachedMedia] = {}
        self._jobs: dict[str, UrlJob] = {}
        self._by_ref: dict[str, str] = {}
        self._by_key: dict[tuple[str, str], tuple[str, str]] = {}
        self._jobs_by_url: dict[str, list[str]] = {}
        self._sessions: dict[str, float] = {}
        self._seq = 0

    # ------------------------------------------------------------------ public

    def call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        op = self._ops.get(action)
        if op is None:
            raise VodApiError(
                "InvalidAction.NotFound", "Specified api is not found, please check your url and method.", 404
            )
        return op(params)

    def reset(self) -> None:
        with self._lock:
            self._generation += 1  # in-flight downloads of the old account discard their result
            self._clear()
        self.oss.ensure_bucket(self.bucket)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def set_video_status(self, video_id: str, status: str | None) -> None:
        """Control plane: hold a video in `status` (review: Checking, Blocked; failures:
        TranscodeFail, UploadFail, ProduceFail; ...) until set again; None resumes its lifecycle."""
        if status is not None and status not in VIDEO_STATUSES:
            raise ValueError(f"unknown video status {status!r}; one of {', '.join(sorted(VIDEO_STATUSES))}")
        with self._lock:
            video = self._videos.get(video_id)
            if video is None:
                raise ValueError(f"no video {video_id!r}")
            video.forced_status = status

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self.clock.now()
            return {
                "bucket": self.bucket,
                "seq": self._seq,
                "sessions": dict(self._sessions),
                "videos": [self._video_entry(v, now) for v in self._videos.values()],
                "images": [self._image_entry(i, now) for i in self._images.values()],
                "attached": [self._attached_entry(a, now) for a in self._attached.values()],
                "url_jobs": [
                    {**j.to_api(now, self.url_job_seconds), "record": j.to_record()} for j in self._jobs.values()
                ],
            }

    def restore(self, data: dict[str, Any]) -> None:
        """Load a snapshot; URL jobs that had not finished downloading start over."""
        with self._lock:
            self._generation += 1
            self._clear()
            self.bucket = data.get("bucket", self.bucket)
            self._seq = int(data.get("seq", 0))
            self._sessions = dict(data.get("sessions", {}))
            for entry in data.get("videos", []):
                self._index(Video.from_record(entry["record"]), "video")
            for entry in data.get("images", []):
                self._index(Image.from_record(entry["record"]), "image")
            for entry in data.get("attached", []):
                self._index(AttachedMedia.from_record(entry["record"]), "attached")
            restart = []
            for entry in data.get("url_jobs", []):
                job = UrlJob.from_record(entry["record"])
                self._jobs[job.job_id] = job
                self._jobs_by_url.setdefault(job.url, []).append(job.job_id)
                if job.outcome is None and job.download_ended_at is None:
                    job.download_started_at = None
                    restart.append(job)
            generation = self._generation
        self.oss.ensure_bucket(self.bucket)
        for job in restart:
            self._submit(job, generation)

    # ------------------------------------------------------------------ helpers

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _index(self, media: Media, kind: str) -> None:
        table = {"video": self._videos, "image": self._images, "attached": self._attached}[kind]
        table[media.media_id] = media  # type: ignore[assignment]
        self._by_key[(media.bucket, media.key)] = (kind, media.media_id)
        if isinstance(media, Video) and media.reference_id:
            self._by_ref[media.reference_id] = media.media_id

    def _unindex(self, media: Media, kind: str) -> None:
        table = {"video": self._videos, "image": self._images, "attached": self._attached}[kind]
        table.pop(media.media_id, None)
        if self._by_key.get((media.bucket, media.key)) == (kind, media.media_id):
            del self._by_key[(media.bucket, media.key)]
        if isinstance(media, Video) and media.reference_id:
            self._by_ref.pop(media.reference_id, None)

    def _file_url(self, media: Media) -> str:
        return f"{self.endpoint}/{media.bucket}/{quote(media.key, safe='/')}"

    def _ticket(self, bucket: str, key: str) -> tuple[str, str]:
        address = {"Endpoint": self.endpoint, "Bucket": bucket, "FileName": key}
        if not is_playlist_key(key):
            return _b64json(address), _b64json(self.sts.mint(bucket, key))
        # M3U8: the segments go under ObjectPrefix (vod-api.md §2), and the token covers them all.
        address["ObjectPrefix"] = prefix = segment_prefix(key)
        return _b64json(address), _b64json(self.sts.mint(bucket, prefix, prefix=True))

    def _video_key(self, ext: str) -> str:
        stamp = format(int(self.clock.now() * 1000), "x")
        while True:
            stem = f"{uuid.uuid4().hex[:8]}-{stamp}"
            key = f"sv/{stem}/{stem}.{ext}"
            if (self.bucket, key) not in self._by_key:
                return key

    def _check_storage(self, params: dict[str, str]) -> None:
        value = params.get("StorageLocation")
        if value and value != self.storage_location:
            raise VodApiError("InvalidStorage.NotFound", "The storage location does not exist.", 404)

    def _delete_objects(self, keys: list[tuple[str, str]]) -> None:
        for bucket, key in keys:
            self.oss.delete(bucket, key)

    def _on_object(self, bucket: str, key: str, info: Any) -> None:
        """OSS listener: an object is complete; the media on that key has been (re)uploaded."""
        with self._lock:
            owner = self._by_key.get((bucket, key))
            if owner is None:
                return
            kind, media_id = owner
            media = {"video": self._videos, "image": self._images, "attached": self._attached}[kind].get(media_id)
            if media is None:
                return
            now = self.clock.now()
            media.landed_at = now
            media.size = int(info.size)
            media.touch(now)
            if isinstance(media, Video) and is_playlist_key(key):
                media.missing_segments = tuple(self._missing_segments(bucket, key))

    def _missing_segments(self, bucket: str, key: str) -> list[str]:
        """The segments a landed playlist names that are not under its ObjectPrefix (a guess at
        the service's check: the official uploader sends every segment before the playlist)."""
        _, reader = self.oss.open(bucket, key)
        try:
            text = b"".join(reader.chunks()).decode("utf-8", "replace")
        finally:
            reader.close()
        prefix = segment_prefix(key)
        return [name for name in playlist_segments(text) if self.oss.head(bucket, prefix + name) is None]

    def _emulated_oss_object(self, url: str) -> tuple[str, str] | None:
        """(bucket, key) when `url` names an object on an OSS host (`<bucket>.oss-<region>.aliyuncs.com`):
        offline, OSS is this emulator, so a URL job reads such a source from its own buckets
        rather than from the internet (the demo's URL item works on any port)."""
        try:
            host = urlsplit(url).hostname or ""
        except ValueError:
            return None
        return self._parse_file_url(url) if _REAL_OSS_HOST.match(host) else None

    def _copy_public_object(self, bucket: str, key: str, store: Callable[[Any, int | None], Any]) -> int:
        """Fetch an emulated OSS object as an anonymous GET would: only from a public-read bucket."""
        if bucket not in self.public_buckets or self.oss.head(bucket, key) is None:
            status = 404 if bucket in self.public_buckets else 403
            raise JobFailed("download_fail", "DownloadFailed", f"The source URL answered HTTP {status}.")
        info, reader = self.oss.open(bucket, key)
        try:
            store(_ChunkFile(reader.chunks()), info.size)
        except Exception as exc:
            raise JobFailed("upload_fail", "UploadFailed", f"Storing the file failed: {exc}") from exc
        finally:
            reader.close()
        return info.size

    def _parse_file_url(self, url: str) -> tuple[str, str] | None:
        """(bucket, key) of a real OSS URL or of the emulator's path-style URL; None if neither."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        match = _REAL_OSS_HOST.match(parts.hostname)
        if match:
            key = unquote(parts.path.lstrip("/"))
            return (match["bucket"], key) if key else None
        bucket, _, raw_key = parts.path.lstrip("/").partition("/")
        key = unquote(raw_key)
        return (bucket, key) if bucket and key else None

    # -------------------------------------------------------------- snapshot rows

    def _video_entry(self, v: Video, now: float) -> dict[str, Any]:
        return {
            "VideoId": v.media_id,
            "Title": v.title,
            "Status": v.status(now, self.transcode_seconds),
            "Size": v.size,
            "ReferenceId": v.reference_id,
            "Bucket": v.bucket,
            "FileName": v.key,
            "CreationTime": iso(v.created_at),
            "Tags": v.tags,
            "CateId": v.cate_id,
            "Description": v.description,
            "MediaType": v.media_type,
            "Origin": v.origin,
            "record": v.to_record(),
        }

    def _image_entry(self, i: Image, now: float) -> dict[str, Any]:
        return {
            "ImageId": i.media_id,
            "Title": i.title,
            "Status": i.status(now),
            "Size": i.size,
            "ImageType": i.image_type,
            "Bucket": i.bucket,
            "FileName": i.key,
            "CreationTime": iso(i.created_at),
            "Tags": i.tags,
            "CateId": i.cate_id,
            "Description": i.description,
            "record": i.to_record(),
        }

    def _attached_entry(self, a: AttachedMedia, now: float) -> dict[str, Any]:
        return {
            "MediaId": a.media_id,
            "Title": a.title,
            "Status": a.status(now),
            "Size": a.size,
            "BusinessType": a.business_type,
            "Bucket": a.bucket,
            "FileName": a.key,
            "CreationTime": iso(a.created_at),
            "Tags": a.tags,
            "CateId": a.cate_ids[0] if a.cate_ids else None,
            "Description": a.description,
            "record": a.to_record(),
        }

    # ------------------------------------------------------------------ uploads

    def _op_CreateUploadVideo(self, p: dict[str, str]) -> dict[str, Any]:
        title = check_title(require(p, "Title"))
        ext = check_media_file_name(require(p, "FileName"))
        description = check_description(p["Description"]) if p.get("Description") else None
        tags = check_tags(p["Tags"]) if p.get("Tags") else None
        cate_id = check_cate_id(p["CateId"]) if p.get("CateId") else None
        template = check_template_group_id(p["TemplateGroupId"]) if p.get("TemplateGroupId") else None
        reference = check_reference_id(p["ReferenceId"]) if p.get("ReferenceId") else None
        user_data = _check_user_data(p["UserData"]) if p.get("UserData") else None
        _int_param(p, "FileSize", 0)
        self._check_storage(p)
        with self._lock:
            if reference and reference in self._by_ref:
                raise VodApiError("InvalidParameter.ReferenceId", "The specified ReferenceId already exists.", 400)
            now = self.clock.now()
            video = Video(
                media_id=_new_id(),
                title=title,
                bucket=self.bucket,
                key=self._video_key(ext),
                created_at=now,
                modified_at=now,
                seq=self._next_seq(),
                description=description,
                tags=tags,
                app_id=p.get("AppId") or DEFAULT_APP_ID,
                user_data=user_data,
                storage_location=self.storage_location,
                file_name=p["FileName"],
                cover_url=p.get("CoverURL") or None,
                cate_id=cate_id,
                reference_id=reference,
                template_group_id=template,
                transcode=bool(p.get("WorkflowId")) or template != NO_TRANSCODE,
            )
            self._index(video, "video")
        address, auth = self._ticket(video.bucket, video.key)
        return {"VideoId": video.media_id, "UploadAddress": address, "UploadAuth": auth}

    def _op_RefreshUploadVideo(self, p: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            video = self._find_video(p)
            if video.landed_at is not None:
                # A refresh of a landed video is the start of a source replacement.
                video.landed_at = None
                video.touch(self.clock.now())
            bucket, key, video_id = video.bucket, video.key, video.media_id
        address, auth = self._ticket(bucket, key)
        return {"VideoId": video_id, "UploadAddress": address, "UploadAuth": auth}

    def _op_CreateUploadImage(self, p: dict[str, str]) -> dict[str, Any]:
        image_type = require(p, "ImageType")
        if image_type not in IMAGE_TYPES:
            raise invalid("ImageType", "Valid values: default, cover.")
        image_ext = (p.get("ImageExt") or "png").lower()
        if image_ext not in IMAGE_EXTS:
            raise invalid("ImageExt", "Valid values: png, jpg, jpeg, gif.")
        title = check_title(p["Title"]) if p.get("Title") else ""
        description = check_description(p["Description"]) if p.get("Description") else None
        tags = check_tags(p["Tags"]) if p.get("Tags") else None
        cate_id = check_cate_id(p["CateId"]) if p.get("CateId") else None
        user_data = _check_user_data(p["UserData"]) if p.get("UserData") else None
        self._check_storage(p)
        with self._lock:
            now = self.clock.now()
            image = Image(
                media_id=_new_id(),
                title=title,
                bucket=self.bucket,
                key=f"image/{image_type}/{uuid.uuid4().hex.upper()}-6-2.{image_ext}",
                created_at=now,
                modified_at=now,
                seq=self._next_seq(),
                description=description,
                tags=tags,
                app_id=p.get("AppId") or DEFAULT_APP_ID,
                user_data=user_data,
                storage_location=self.storage_location,
                image_type=image_type,
                image_ext=image_ext,
                cate_id=cate_id,
                original_file_name=p.get("OriginalFileName") or None,
            )
            self._index(image, "image")
        address, auth = self._ticket(image.bucket, image.key)
        url = self._file_url(image)
        return {
            "ImageId": image.media_id,
            "ImageURL": url,
            "FileURL": url,
            "UploadAddress": address,
            "UploadAuth": auth,
        }

    def _op_CreateUploadAttachedMedia(self, p: dict[str, str]) -> dict[str, Any]:
        business_type = require(p, "BusinessType")
        if business_type not in ATTACHED_EXTS:
            raise invalid("BusinessType", "Valid values: watermark, subtitle, material.")
        media_ext = (p.get("MediaExt") or ext_of(p.get("FileName") or "")).lower()
        if not media_ext:
            raise missing("MediaExt")
        if media_ext not in ATTACHED_EXTS[business_type]:
            raise invalid("MediaExt", f"Valid values for {business_type}: {', '.join(ATTACHED_EXTS[business_type])}.")
        title = check_title(p["Title"]) if p.get("Title") else (p.get("FileName") or "")
        description = check_description(p["Description"]) if p.get("Description") else None
        tags = check_tags(p["Tags"]) if p.get("Tags") else None
        cate_ids = [check_cate_id(c) for c in (p.get("CateIds") or "").split(",") if c.strip()]
        if len(cate_ids) > 5:
            raise invalid("CateIds", "At most 5 categories are allowed.")
        user_data = _check_user_data(p["UserData"]) if p.get("UserData") else None
        _int_param(p, "FileSize", 0)
        self._check_storage(p)
        with self._lock:
            now = self.clock.now()
            media = AttachedMedia(
                media_id=_new_id(),
                title=title,
                bucket=self.bucket,
                key=f"attached/{business_type}/{uuid.uuid4().hex}.{media_ext}",
                created_at=now,
                modified_at=now,
                seq=self._next_seq(),
                description=description,
                tags=tags,
                app_id=p.get("AppId") or DEFAULT_APP_ID,
                user_data=user_data,
                storage_location=self.storage_location,
                business_type=business_type,
                media_ext=media_ext,
                file_name=p.get("FileName") or None,
                cate_ids=cate_ids,
            )
            self._index(media, "attached")
        address, auth = self._ticket(media.bucket, media.key)
        url = self._file_url(media)
        return {
            "MediaId": media.media_id,
            "MediaURL": url,
            "FileURL": url,
            "UploadAddress": address,
            "UploadAuth": auth,
        }

    # ------------------------------------------------------------------ URL jobs

    def _op_UploadMediaByURL(self, p: dict[str, str]) -> dict[str, Any]:
        raw = require(p, "UploadURLs")
        # Each entry as received (percent-encoded by the caller); the job fetches it decoded once.
        received = [u.strip() for u in raw.split(",") if u.strip()]
        urls = [unquote(u) for u in received]
        if not urls:
            raise missing("UploadURLs")
        if len(urls) > MAX_URL_UPLOADS:
            raise invalid("UploadURLs", f"At most {MAX_URL_UPLOADS} URLs are allowed.")
        metadatas: dict[str, dict[str, Any]] = {}
        if p.get("UploadMetadatas"):
            items = _parse_json(p, "UploadMetadatas")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise invalid("UploadMetadatas", "It must be a JSON array of objects.")
            for item in items:
                source = str(item.get("SourceURL") or "")
                if source not in received:
                    continue  # vod-api.md §00: metadata whose SourceURL is no entry as received is ignored
                if not item.get("Title"):
                    raise invalid("UploadMetadatas", "Title is mandatory in each metadata.")
                check_title(str(item["Title"]))
                if item.get("Description"):
                    check_description(str(item["Description"]))
                if item.get("Tags"):
                    item["Tags"] = check_tags(str(item["Tags"]))
                if item.get("CateId") not in (None, ""):
                    item["CateId"] = check_cate_id(item["CateId"])
                if item.get("TemplateGroupId"):
                    check_template_group_id(str(item["TemplateGroupId"]))
                metadatas[urls[received.index(source)]] = item
        template = check_template_group_id(p["TemplateGroupId"]) if p.get("TemplateGroupId") else None
        user_data = _check_user_data(p["UserData"]) if p.get("UserData") else None
        self._check_storage(p)
        plans = []
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise invalid("UploadURLs", f"{url!r} is not an http(s) URL.")
            meta = metadatas.get(url, {})
            ext = str(meta.get("FileExtension") or ext_of(unquote(parts.path))).lower().lstrip(".")
            if ext not in VIDEO_EXTS and ext not in AUDIO_EXTS:
                raise invalid("UploadURLs", f"{url!r} has no media file extension and no FileExtension.")
            plans.append((url, ext, meta))
        session = p.get("SessionId")
        if session and not _SESSION_ID.fullmatch(session):
            raise invalid("SessionId", "It must be at most 50 characters of A-Z, a-z, 0-9, '-' and '_'.")
        with self._lock:
            now = self.clock.now()
            if session:
                used = self._sessions.get(session)
                if used is not None and now - used < SESSION_WINDOW:
                    raise invalid("SessionId", "The SessionId was used within the last 10 minutes.")
                self._sessions[session] = now
            jobs = []
            for url, ext, meta in plans:
                job = UrlJob(
                    job_id=_new_id(),
                    url=url,
                    ext=ext,
                    key=self._video_key(ext),
                    created_at=now,
                    seq=self._next_seq(),
                    metadata=dict(meta),
                    template_group_id=str(meta.get("TemplateGroupId") or template or "") or None,
                    workflow_id=str(meta.get("WorkflowId") or p.get("WorkflowId") or "") or None,
                    user_data=user_data,
                    app_id=p.get("AppId") or None,
                )
                self._jobs[job.job_id] = job
                self._jobs_by_url.setdefault(url, []).append(job.job_id)
                jobs.append(job)
            generation = self._generation
        for job in jobs:
            self._submit(job, generation)
        return {"UploadJobs": [{"JobId": j.job_id, "SourceURL": j.url} for j in jobs]}

    def _submit(self, job: UrlJob, generation: int) -> None:
        if not self._stop.is_set():
            self._pool.submit(self._run_job, job, generation)

    def _current(self, job: UrlJob, generation: int) -> bool:
        return self._generation == generation and self._jobs.get(job.job_id) is job

    def _run_job(self, job: UrlJob, generation: int) -> None:
        """Worker: wait out PENDING/PROCESSING on the emulator clock, download, then create the video."""
        start_at = job.download_may_start_at(self.url_job_seconds)
        while True:
            with self._lock:
                if not self._current(job, generation) or job.outcome is not None:
                    return
                now = self.clock.now()
                if now >= start_at:
                    job.download_started_at = now
                    break
            if self._stop.wait(0.05):
                return
        failure: JobFailed | None = None
        size = 0
        try:
            def store(f: Any, n: int | None) -> Any:
                return self.oss.put_stream(self.bucket, job.key, f, length=n)

            source = self._emulated_oss_object(job.url)
            if source is None:
                size = download_into(job.url, store, self._stop)
            else:
                size = self._copy_public_object(*source, store)
        except JobFailed as exc:
            failure = exc
        except Exception as exc:  # never let a worker die silently: the job must end
            failure = JobFailed("download_fail", "DownloadFailed", f"Unexpected error: {exc}")
        with self._lock:
            if not self._current(job, generation):
                return
            now = self.clock.now()
            job.download_ended_at = now
            if failure is not None:
                job.outcome = failure.outcome
                job.error_code = failure.code
                job.error_message = failure.message
            else:
                job.outcome = "ok"
                job.file_size = size
                self._create_url_video(job, now)
        if failure is not None:
            try:
                self.oss.delete(self.bucket, job.key)  # drop a partial object, if any
            except Exception:  # noqa: S110 - best effort cleanup
                pass

    def _create_url_video(self, job: UrlJob, now: float) -> None:
        meta = job.metadata
        template = job.template_group_id
        name = unquote(urlsplit(job.url).path).rsplit("/", 1)[-1]
        video = Video(
            media_id=_new_id(),
            title=str(meta.get("Title") or name or job.job_id)[:128],
            bucket=self.bucket,
            key=job.key,
            created_at=now,
            modified_at=now,
            seq=self._next_seq(),
            description=str(meta["Description"]) if meta.get("Description") else None,
            tags=str(meta["Tags"]) if meta.get("Tags") else None,
            app_id=job.app_id or DEFAULT_APP_ID,
            user_data=job.user_data,
            storage_location=self.storage_location,
            size=job.file_size or 0,
            landed_at=job.upload_success_at(self.url_job_seconds),
            file_name=name,
            cover_url=str(meta["CoverURL"]) if meta.get("CoverURL") else None,
            cate_id=meta.get("CateId") if meta.get("CateId") not in (None, "") else None,
            template_group_id=template,
            transcode=bool(job.workflow_id) or template != NO_TRANSCODE,
            origin="url",
        )
        self._index(video, "video")
        job.media_id = video.media_id

    def _jobs_for(self, p: dict[str, str], url_param: str) -> tuple[list[UrlJob], list[str]]:
        """Jobs named by JobIds (which wins) or by percent-encoded URLs; plus the names not found."""
        found: list[UrlJob] = []
        missing_names: list[str] = []
        if p.get("JobIds"):
            for job_id in split_ids(p, "JobIds", MAX_URL_QUERIES):
                job = self._jobs.get(job_id)
                if job is None:
                    missing_names.append(job_id)
                else:
                    found.append(job)
        elif p.get(url_param):
            urls = [unquote(u) for u in split_ids(p, url_param, MAX_URL_QUERIES)]
            for url in urls:
                ids = self._jobs_by_url.get(url)
                if not ids:
                    missing_names.append(url)
                found.extend(self._jobs[i] for i in ids or ())
        else:
            raise missing("JobIds")
        return found, missing_names

    def _op_GetURLUploadInfos(self, p: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            jobs, not_found = self._jobs_for(p, "UploadURLs")
            now = self.clock.now()
            infos = [j.to_api(now, self.url_job_seconds) for j in jobs]
        return {"URLUploadInfoList": infos, "NonExists": not_found}

    def _op_CancelUrlUploadJobs(self, p: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            jobs, not_found = self._jobs_for(p, "UploadUrls")
            now = self.clock.now()
            canceled = []
            for job in jobs:
                if job.download_started_at is None and job.outcome is None:
                    job.outcome = "canceled"
                    job.canceled_at = now
                    canceled.append(job.job_id)
        return {"CanceledJobs": canceled, "NonExists": not_found}

    # ------------------------------------------------------------------ RegisterMedia

    def _op_RegisterMedia(self, p: dict[str, str]) -> dict[str, Any]:
        items = _parse_json(p, "RegisterMetadatas")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise invalid("RegisterMetadatas", "It must be a JSON array of objects.")
        if not items:
            raise missing("RegisterMetadatas")
        if len(items) > MAX_REGISTER:
            raise invalid("RegisterMetadatas", f"At most {MAX_REGISTER} items are allowed.")
        for item in items:
            if not item.get("FileURL"):
                raise invalid("RegisterMetadatas", "FileURL is mandatory in each item.")
            if item.get("Title"):
                check_title(str(item["Title"]))
            if item.get("Description"):
                check_description(str(item["Description"]))
            if item.get("Tags"):
                item["Tags"] = check_tags(str(item["Tags"]))
            if item.get("CateId") not in (None, ""):
                item["CateId"] = check_cate_id(item["CateId"])
        template = check_template_group_id(p["TemplateGroupId"]) if p.get("TemplateGroupId") else None
        transcode = bool(p.get("WorkflowId")) or (template is not None and template != NO_TRANSCODE)
        user_data = _check_user_data(p["UserData"]) if p.get("UserData") else None
        # OSS is asked before taking our lock (lock order: never hold ours while calling OSS).
        located = []
        for item in items:
            url = str(item["FileURL"])
            place = self._parse_file_url(url) if len(url.encode("utf-8")) <= 1024 else None
            head = self.oss.head(*place) if place else None
            located.append((item, url, place, head))
        # vod-api.md §00: "all files in the request must have the same storage address".
        if len({place[0] for _, _, place, _ in located if place}) > 1:
            raise invalid("RegisterMetadatas", "All files in the request must have the same storage address.")
        registered, failed = [], []
        with self._lock:
            now = self.clock.now()
            for item, url, place, head in located:
                owner = self._by_key.get(place) if place else None
                if owner is not None and owner[0] in ("video", "image"):
                    registered.append({"MediaId": owner[1], "FileURL": _other_scheme(url), "NewRegister": False})
                    continue
                ext = ext_of(place[1]) if place else ""
                if head is None or not (ext in VIDEO_EXTS or ext in AUDIO_EXTS or ext in IMAGE_EXTS):
                    failed.append(url)
                    continue
                media = self._register(item, url, place, head, ext, now, template, transcode, user_data)
                registered.append({"MediaId": media.media_id, "FileURL": _other_scheme(url), "NewRegister": True})
        return {"RegisteredMediaList": registered, "FailedFileURLs": failed}

    def _register(self, item, url, place, head, ext, now, template, transcode, user_data) -> Media:
        bucket, key = place
        common = dict(
            media_id=_new_id(),
            title=str(item.get("Title") or key.rsplit("/", 1)[-1]),
            bucket=bucket,
            key=key,
            created_at=now,
            modified_at=now,
            seq=self._next_seq(),
            description=str(item["Description"]) if item.get("Description") else None,
            tags=str(item["Tags"]) if item.get("Tags") else None,
            user_data=user_data,
            storage_location=f"{bucket}.oss-{self.region}.aliyuncs.com",
            size=int(head.size),
            landed_at=now,
        )
        cate_id = item.get("CateId") if item.get("CateId") not in (None, "") else None
        if ext in IMAGE_EXTS and ext not in VIDEO_EXTS:
            image = Image(**common, image_type="default", image_ext=ext, cate_id=cate_id)
            self._index(image, "image")
            return image
        video = Video(
            **common,
            file_name=key.rsplit("/", 1)[-1],
            cover_url=str(item["CoverURL"]) if item.get("CoverURL") else None,
            cate_id=cate_id,
            template_group_id=template,
            transcode=transcode,
            origin="register",
            register_url=url,
        )
        self._index(video, "video")
        return video

    # ------------------------------------------------------------------ videos

    def _find_video(self, p: dict[str, str]) -> Video:
        """By VideoId, else ReferenceId; caller holds the lock."""
        if p.get("VideoId"):
            video = self._videos.get(p["VideoId"])
        elif p.get("ReferenceId"):
            video_id = self._by_ref.get(p["ReferenceId"])
            video = self._videos.get(video_id) if video_id else None
        else:
            raise missing("VideoId")
        if video is None:
            raise _video_not_found()
        return video

    def _video_api(self, video: Video, now: float, nested: bool) -> dict[str, Any]:
        return video.to_api(video.status(now, self.transcode_seconds), self.region, nested)

    def _op_GetVideoInfo(self, p: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            video = self._find_video(p)
            return {"Video": self._video_api(video, self.clock.now(), nested=True)}

    def _op_GetVideoInfos(self, p: dict[str, str]) -> dict[str, Any]:
        video_ids = split_ids(p, "VideoIds", MAX_IDS, "VideoIdsExceededMax")
        reference_ids = split_ids(p, "ReferenceIds", MAX_IDS, "VideoIdsExceededMax")
        if not video_ids and not reference_ids:
            raise missing("VideoIds")
        with self._lock:
            now = self.clock.now()
            found: list[Video] = []
            no_video = [i for i in video_ids if i not in self._videos]
            found.extend(self._videos[i] for i in video_ids if i in self._videos)
            no_ref = [r for r in reference_ids if r not in self._by_ref]
            for ref in reference_ids:
                video = self._videos.get(self._by_ref.get(ref, ""))
                if video is not None and video not in found:
                    found.append(video)
            if not found:
                raise _video_not_found()  # vod-api.md §00: when no requested video exists
            return {
                "VideoList": [self._video_api(v, now, nested=False) for v in found],
                "NonExistVideoIds": no_video,
                "NonExistReferenceIds": no_ref,
            }

    def _apply_video_changes(self, video: Video, changes: dict[str, Any], now: float) -> None:
        """Validate every passed field first, then change only those; caller holds the lock."""
        updates: dict[str, Any] = {}
        _refuse_clearing(changes, ("Description", "Tags", "CoverURL", "CateId"))
        if "Title" in changes:
            title = str(changes["Title"])
            if not title:
                raise invalid("Title", "It cannot be empty.")
            updates["title"] = check_title(title)
        if "Description" in changes:
            updates["description"] = check_description(str(changes["Description"])) or None
        if "Tags" in changes:
            updates["tags"] = check_tags(str(changes["Tags"])) or None
        if "CoverURL" in changes:
            updates["cover_url"] = str(changes["CoverURL"]) or None
        if "CateId" in changes:
            updates["cate_id"] = check_cate_id(changes["CateId"]) if changes["CateId"] not in ("", None) else None
        if "UserData" in changes:
            updates["user_data"] = _check_user_data(str(changes["UserData"])) if changes["UserData"] else None
        if changes.get("ReferenceId"):
            ref = check_reference_id(str(changes["ReferenceId"]))
            if self._by_ref.get(ref, video.media_id) != video.media_id:
                raise VodApiError("InvalidParameter.ReferenceId", "The specified ReferenceId already exists.", 400)
            updates["reference_id"] = ref
        if "reference_id" in updates and video.reference_id != updates["reference_id"]:
            if video.reference_id:
                self._by_ref.pop(video.reference_id, None)
            self._by_ref[updates["reference_id"]] = video.media_id
        for name, value in updates.items():
            setattr(video, name, value)
        video.touch(now)

    def _op_UpdateVideoInfo(self, p: dict[str, str]) -> dict[str, Any]:
        video_id = require(p, "VideoId")
        fields = ("Title", "Description", "Tags", "CoverURL", "CateId", "UserData", "ReferenceId")
        with self._lock:
            video = self._videos.get(video_id)
            if video is None:
                raise _video_not_found()
            self._apply_video_changes(video, {k: p[k] for k in fields if k in p}, self.clock.now())
        return {}

    def _update_content(self, p: dict[str, str], id_field: str, limit_code: str | None) -> list[dict[str, Any]]:
        items = _parse_json(p, "UpdateContent")
        if isinstance(items, dict) and isinstance(items.get("UpdateContent"), list):
            items = items["UpdateContent"]
        if not isinstance(items, list) or not all(isinstance(i, dict) and i.get(id_field) for i in items):
            raise invalid("UpdateContent", f"It must be a JSON array of objects with {id_field}.")
        if len(items) > MAX_IDS:
            if limit_code:
                raise VodApiError(limit_code, f"The number of items exceeds the maximum ({MAX_IDS}).", 400)
            raise invalid("UpdateContent", f"At most {MAX_IDS} items are allowed.")
        return items

    def _op_UpdateVideoInfos(self, p: dict[str, str]) -> dict[str, Any]:
        items = self._update_content(p, "VideoId", "VideoIdsExceededMax")
        fields = ("Title", "Description", "Tags", "CoverURL", "CateId")
        with self._lock:
            now = self.clock.now()
            not_found = []
            for item in items:
                video = self._videos.get(str(item["VideoId"]))
                if video is None:
                    not_found.append(str(item["VideoId"]))
                    continue
                self._apply_video_changes(video, {k: item[k] for k in fields if k in item}, now)
        return {"NonExistVideoIds": not_found, "ForbiddenVideoIds": []}

    def _op_DeleteVideo(self, p: dict[str, str]) -> dict[str, Any]:
        video_ids = split_ids(p, "VideoIds", MAX_IDS, "VideoIdsExceededMax")
        reference_ids = split_ids(p, "ReferenceIds", MAX_IDS, "VideoIdsExceededMax")
        if not video_ids and not reference_ids:
            raise missing("VideoIds")
        out: dict[str, Any] = {"NonExistVideoIds": [], "ForbiddenVideoIds": []}
        objects = []
        with self._lock:
            doomed = []
            for video_id in video_ids:
                video = self._videos.get(video_id)
                (doomed.append(video) if video else out["NonExistVideoIds"].append(video_id))
            if reference_ids:
                out["NonExistReferenceIds"] = []
                for ref in reference_ids:
                    video = self._videos.get(self._by_ref.get(ref, ""))
                    (doomed.append(video) if video else out["NonExistReferenceIds"].append(ref))
            if not doomed:
                raise _video_not_found()  # vod-api.md §00: when no requested video exists
            for video in doomed:
                if video.media_id in self._videos:
                    self._unindex(video, "video")
                    objects.append((video.bucket, video.key))
        self._delete_objects(objects)
        return out

    # ------------------------------------------------------------------ images

    def _op_GetImageInfo(self, p: dict[str, str]) -> dict[str, Any]:
        image_id = require(p, "ImageId")
        with self._lock:
            image = self._images.get(image_id)
            if image is None:
                raise _no_such_resource()
            return {"ImageInfo": image.to_api(image.status(self.clock.now()), self._file_url(image))}

    def _op_UpdateImageInfos(self, p: dict[str, str]) -> dict[str, Any]:
        items = self._update_content(p, "ImageId", None)
        with self._lock:
            now = self.clock.now()
            not_found = []
            for item in items:
                image = self._images.get(str(item["ImageId"]))
                if image is None:
                    not_found.append(str(item["ImageId"]))
                    continue
                self._apply_common_changes(image, item, now)
                if "CateId" in item:
                    image.cate_id = check_cate_id(item["CateId"]) if item["CateId"] not in ("", None) else None
        return {"NonExistImageIds": not_found}

    def _apply_common_changes(self, media: Media, item: dict[str, Any], now: float) -> None:
        _refuse_clearing(item, ("Description", "Tags", "CateId", "CateIds"))
        if "Title" in item:
            if not str(item["Title"]):
                raise invalid("Title", "It cannot be empty.")
            media.title = check_title(str(item["Title"]))
        if "Description" in item:
            media.description = check_description(str(item["Description"])) or None
        if "Tags" in item:
            media.tags = check_tags(str(item["Tags"])) or None
        media.touch(now)

    def _op_DeleteImage(self, p: dict[str, str]) -> dict[str, Any]:
        kind = require(p, "DeleteImageType")
        objects = []
        with self._lock:
            doomed: list[Image] = []
            # vod-api.md §00: a missing image is 404 NoSuchResource. With several ids and only
            # some missing, nothing is deleted (a guess: the stricter reading).
            if kind == "ImageId":
                for image_id in split_ids(p, "ImageIds", MAX_IDS) or [require(p, "ImageIds")]:
                    if image_id not in self._images:
                        raise _no_such_resource()
                    doomed.append(self._images[image_id])
            elif kind == "ImageURL":
                for url in split_ids(p, "ImageURLs", MAX_IDS) or [require(p, "ImageURLs")]:
                    place = self._parse_file_url(unquote(url))
                    owner = self._by_key.get(place) if place else None
                    if not owner or owner[0] != "image":
                        raise _no_such_resource()
                    doomed.append(self._images[owner[1]])
            elif kind == "VideoId":
                # Video snapshots/covers are not modelled: there is nothing to delete.
                if require(p, "VideoId") not in self._videos:
                    raise _video_not_found()
            else:
                raise invalid("DeleteImageType", "Valid values: ImageURL, ImageId, VideoId.")
            for image in doomed:
                self._unindex(image, "image")
                objects.append((image.bucket, image.key))
        self._delete_objects(objects)
        return {}

    # ------------------------------------------------------------------ attached media

    def _op_GetAttachedMediaInfo(self, p: dict[str, str]) -> dict[str, Any]:
        ids = split_ids(p, "MediaIds", MAX_IDS) or [require(p, "MediaIds")]
        with self._lock:
            now = self.clock.now()
            found = [self._attached[i] for i in ids if i in self._attached]
            return {
                "AttachedMediaList": [a.to_api(a.status(now), self._file_url(a)) for a in found],
                "NonExistMediaIds": [i for i in ids if i not in self._attached],
            }

    def _op_UpdateAttachedMediaInfos(self, p: dict[str, str]) -> dict[str, Any]:
        items = self._update_content(p, "MediaId", None)
        with self._lock:
            now = self.clock.now()
            not_found = []
            for item in items:
                media = self._attached.get(str(item["MediaId"]))
                if media is None:
                    not_found.append(str(item["MediaId"]))
                    continue
                self._apply_common_changes(media, item, now)
                if "CateIds" in item:
                    cate_ids = [check_cate_id(c) for c in str(item["CateIds"]).split(",") if c.strip()]
                    if len(cate_ids) > 5:
                        raise invalid("CateIds", "At most 5 categories are allowed.")
                    media.cate_ids = cate_ids
        return {"NonExistMediaIds": not_found}

    def _op_DeleteAttachedMedia(self, p: dict[str, str]) -> dict[str, Any]:
        ids = split_ids(p, "MediaIds", MAX_IDS) or [require(p, "MediaIds")]
        objects = []
        with self._lock:
            not_found = []
            for media_id in ids:
                media = self._attached.get(media_id)
                if media is None:
                    not_found.append(media_id)
                    continue
                self._unindex(media, "attached")
                objects.append((media.bucket, media.key))
        self._delete_objects(objects)
        return {"NonExistMediaIds": not_found}

    # ------------------------------------------------------------------ SearchMedia

    def _op_SearchMedia(self, p: dict[str, str]) -> dict[str, Any]:
        search_type = p.get("SearchType") or "video"
        if search_type not in ("video", "audio", "image", "attached"):
            raise invalid("SearchType", "Valid values: video, audio, image, attached.")
        clauses = parse_match(p.get("Match") or "")
        fields = _parse_fields(search_type, p.get("Fields") or "")
        page_no = _int_param(p, "PageNo", 1)
        page_size = _int_param(p, "PageSize", 10)
        if page_no < 1:
            raise invalid("PageNo", "It must be at least 1.")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise invalid("PageSize", f"It must be between 1 and {MAX_PAGE_SIZE}.")
        sort_by = p.get("SortBy") or "CreationTime:Desc"
        if sort_by not in ("CreationTime:Desc", "CreationTime:Asc"):
            raise invalid("SortBy", "Valid values: CreationTime:Desc, CreationTime:Asc.")
        if p.get("ScrollToken"):
            offset = _decode_scroll(p["ScrollToken"])
        else:
            offset = (page_no - 1) * page_size
            if offset >= MAX_PAGED_RESULTS:
                raise invalid("PageNo", f"Paging reaches {MAX_PAGED_RESULTS} results; use ScrollToken.")
        with self._lock:
            now = self.clock.now()
            rows = self._search_rows(search_type, now)
            hits = [(media, view) for media, view in rows if all(c(view) for c in clauses)]
            hits.sort(key=lambda h: (h[0].created_at, h[0].seq), reverse=sort_by.endswith("Desc"))
            page = hits[offset : offset + page_size]
            media_list = [self._search_item(search_type, media, view, fields) for media, view in page]
        out: dict[str, Any] = {"Total": len(hits), "MediaList": media_list}
        if offset + page_size < len(hits):
            out["ScrollToken"] = _encode_scroll(offset + page_size)
        return out

    def _search_rows(self, search_type: str, now: float) -> list[tuple[Media, dict[str, Any]]]:
        if search_type in ("video", "audio"):
            return [
                (v, self._video_api(v, now, nested=False))
                for v in self._videos.values()
                if v.media_type == search_type
            ]
        if search_type == "image":
            return [(i, i.to_api(i.status(now), self._file_url(i))) for i in self._images.values()]
        return [(a, a.to_api(a.status(now), self._file_url(a))) for a in self._attached.values()]

    def _search_item(self, search_type: str, media: Media, view: dict[str, Any],
                     fields: list[str]) -> dict[str, Any]:
        """Only MediaType, MediaId and CreationTime, plus the requested `fields` in the media's view."""
        item: dict[str, Any] = {
            "MediaType": search_type,
            "MediaId": media.media_id,
            "CreationTime": iso(media.created_at),
        }
        if fields:
            if search_type == "audio":
                view = {**view, "AudioId": media.media_id}
            wrapper = {"video": "Video", "audio": "Audio", "image": "Image", "attached": "AttachedMedia"}[search_type]
            item[wrapper] = {f: view[f] for f in fields if f in view}
        return item


# ---------------------------------------------------------------------- Match

_CLAUSE = re.compile(
    r"""\s*(?P<field>[A-Za-z]+)\s*(?P<op>=|in\b)\s*
        (?P<value>\((?:[^()'"]|'[^']*'|"[^"]*")*\)|'[^']*'|"[^"]*"|[^\s()'"]+)\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_AND = re.compile(r"and\b", re.IGNORECASE)
_VALUE = re.compile(r"""'([^']*)'|"([^"]*)"|([^,()'"\s]+)""")
_ID_FIELDS = {"mediaid": ("VideoId", "ImageId", "MediaId"), "videoid": ("VideoId",), "imageid": ("ImageId",)}


# What SearchMedia can return per search type (`Fields`); never ReferenceId or UserData.
_VIDEO_RETURNABLE = ("VideoId", "Title", "Description", "Duration", "CoverURL", "Status", "CreationTime",
                     "ModificationTime", "Size", "CateId", "CateName", "Tags", "StorageLocation", "AppId",
                     "AuditStatus", "Snapshots", "TemplateGroupId", "RegionId")
_RETURNABLE = {
    "video": frozenset(_VIDEO_RETURNABLE),
    "audio": frozenset((*_VIDEO_RETURNABLE, "AudioId")),
    "image": frozenset(("ImageId", "Title", "Description", "ImageType", "Status", "CreationTime",
                        "ModificationTime", "CateId", "Tags", "StorageLocation", "AppId", "URL", "Mezzanine")),
    "attached": frozenset(("MediaId", "Title", "Description", "Type", "Tags", "URL", "Status", "FileSize",
                           "StorageLocation", "AppId", "CreationTime", "ModificationTime", "Categories")),
}


def _parse_fields(search_type: str, text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fields if f not in _RETURNABLE[search_type]]
    if bad:
        raise invalid("Fields", f"The field {bad[0]!r} cannot be returned for {search_type} media.")
    return fields


def _bad_match(why: str) -> VodApiError:
    return invalid("Match", why)


def parse_match(text: str) -> list[Callable[[dict[str, Any]], bool]]:
    """`Field = 'v'`, `Field in ('a','b')`, `CreationTime = ('from','to')`, joined by `and`."""
    clauses: list[Callable[[dict[str, Any]], bool]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        m = _CLAUSE.match(text, pos)
        if not m:
            raise _bad_match(f"Cannot parse the expression near {text[pos:pos + 30]!r}.")
        values = [next(g for g in v.groups() if g is not None) for v in _VALUE.finditer(m["value"])]
        clauses.append(_clause(m["field"], m["op"].lower(), m["value"].startswith("("), values))
        pos = m.end()
        if pos < len(text):
            a = _AND.match(text, pos)
            if not a:
                raise _bad_match("Only 'and' joins conditions.")
            pos = a.end()
    return clauses


def _clause(field: str, op: str, is_tuple: bool, values: list[str]) -> Callable[[dict[str, Any]], bool]:
    name = field.lower()
    if name == "creationtime":
        if not is_tuple or len(values) != 2:
            raise _bad_match("CreationTime takes a range: CreationTime = ('from','to').")
        try:
            low, high = parse_iso(values[0]), parse_iso(values[1])
        except ValueError:
            raise _bad_match("CreationTime values look like 2024-01-01T00:00:00Z.") from None
        return lambda view: low <= parse_iso(view["CreationTime"]) <= high
    if name == "status" and op != "in":
        raise _bad_match("Status supports only a multi-value query: Status in ('Normal','Uploading').")
    if op == "=" and len(values) != 1:
        raise _bad_match(f"'{field} =' takes one value; use 'in' for several.")
    wanted = set(values)
    if name == "title":
        needles = [v.lower() for v in values]
        return lambda view: any(n in str(view.get("Title", "")).lower() for n in needles)
    if name == "description":
        needles = [v.lower() for v in values]
        return lambda view: any(n in str(view.get("Description", "")).lower() for n in needles)
    if name == "tags":
        return lambda view: bool(wanted & set(str(view.get("Tags", "")).split(",")))
    if name in _ID_FIELDS:
        keys = _ID_FIELDS[name]
        return lambda view: any(view.get(k) in wanted for k in keys)
    exact = {
        "status": "Status",
        "cateid": "CateId",
        "appid": "AppId",
        "storagelocation": "StorageLocation",
        "type": "Type",
        "imagetype": "ImageType",
    }
    if name not in exact:
        raise _bad_match(f"The field {field!r} cannot be searched.")
    key = exact[name]
    return lambda view: str(view.get(key, "")) in wanted


def _encode_scroll(offset: int) -> str:
    return base64.urlsafe_b64encode(f"vodsync-emulator:{offset}".encode()).decode("ascii")


def _decode_scroll(token: str) -> int:
    try:
        prefix, _, number = base64.urlsafe_b64decode(token.encode("ascii")).decode().partition(":")
        if prefix != "vodsync-emulator":
            raise ValueError(token)
        return int(number)
    except ValueError:
        raise invalid("ScrollToken", "It is not a token this service issued.") from None


__all__ = ["VodModel", "parse_match"]
