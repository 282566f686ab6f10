"""VodClient: typed VOD calls over aliyunsdkvod, with retries and error translation.

This module owns how vodsync reaches the VOD API (endpoint, credentials,
proxies, timeouts), the retry loop around every call, the special handling of
the non-idempotent Create* calls (vod-api.md §0.2), decoding of UploadAddress /
UploadAuth, and the translation of SDK exceptions into `CloudError`. No SDK
type or exception leaves it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
from aliyunsdkcore.client import AcsClient

from vodsync.cloud.budget import Budget
from vodsync.cloud.retry import (
    IDENTITY_REJECTED_CODES,
    RetryPolicy,
    call_with_retry,
    install_sdk_log_scrubber,
    is_credentials_rejected,
    is_retryable_code,
    scrub,
)
from vodsync.cloud.settings import CloudSettings, is_loopback_url
from vodsync.cloud.types import (
    Created,
    Hit,
    MediaKind,
    Registered,
    RegisterEntry,
    RemoteMedia,
    UploadAddress,
    UploadCredential,
    UploadTicket,
    UrlJob,
    UrlUploadEntry,
    same_file_url,
    search_hit,
)
from vodsync.errors import CloudError, CredentialsRejected
from vodsync.logs import register_secret

DEFAULT_UPLOAD_AUTH_LIFETIME = 3000  # seconds, vod-api.md §2, when UploadAuth says nothing
NETWORK_ERROR = "SDK.HttpError"
VIDEO_NOT_FOUND = "InvalidVideo.NotFound"  # GetVideoInfos / DeleteVideo when no requested id exists
IMAGE_NOT_FOUND = "NoSuchResource"  # GetImageInfo / DeleteImage of a missing image

# A network error whose text says the connection never opened means the request
# was not sent, so even a Create* may be repeated. Anything else (read timeout,
# reset, aborted) may have reached the server: ambiguous for a Create*.
_NOT_SENT_MARKERS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "ConnectTimeoutError",
    "connect timeout=",
    "NameResolutionError",
    "Name or service not known",
    "nodename nor servname",
    "Temporary failure in name resolution",
)

_VIDEO_FIELDS = {"title": "Title", "description": "Description", "tags": "Tags", "cate_id": "CateId", "cover_url": "CoverURL"}
_IMAGE_FIELDS = {"title": "Title", "description": "Description", "tags": "Tags", "cate_id": "CateId"}
_ATTACHED_FIELDS = {"title": "Title", "description": "Description", "tags": "Tags", "cate_id": "CateIds"}

# Every RPC parameter travels in the query string (vod-api.md §1) and the service's URL limit is
# not documented: batched payloads (UploadMetadatas, RegisterMetadatas, UpdateContent) are split
# so that one call's parameters stay within this many bytes, encoded.
MAX_QUERY_BYTES = 6 * 1024

Observer = Callable[[str, "str | None"], None]


@cache
def _request_class(action: str) -> type:
    module = importlib.import_module(f"aliyunsdkvod.request.v20170321.{action}Request")
    return getattr(module, f"{action}Request")


class VodClient:
    """Typed, retrying access to the VOD API. Thread-safe; share one per process."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.time,
        observer: Observer | None = None,
        budget: Budget | None = None,
    ) -> None:
        self._settings = settings
        # Every attempt of every call takes a token of its action first (the account's QPS).
        self._budget = budget if budget is not None else Budget(settings.api_limits)
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._observer = observer
        self._secrets = settings.secrets()
        for secret in self._secrets:  # scrubbed from every log line from now on, wherever it shows up
            register_secret(secret)
        self._lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self._gate = _CredentialGate()
        install_sdk_log_scrubber()
        self._acs, self._prepare = _connect(settings)

    def __repr__(self) -> str:
        return f"VodClient({self._settings!r})"

    # ---- uploads -------------------------------------------------------------

    def create_upload_video(
        self,
        *,
        title: str,
        file_name: str,
        file_size: int | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
        cate_id: int | None = None,
        cover_url: str | None = None,
        template_group_id: str | None = None,
        workflow_id: str | None = None,
        storage_location: str | None = None,
        app_id: str | None = None,
        reference_id: str | None = None,
        user_data: str | Mapping[str, Any] | None = None,
    ) -> UploadTicket:
        params = {
            "Title": title,
            "FileName": file_name,
            "FileSize": file_size,
            "Description": description,
            "Tags": _join_tags(tags),
            "CateId": cate_id,
            "CoverURL": cover_url,
            "TemplateGroupId": template_group_id,
            "WorkflowId": workflow_id,
            "StorageLocation": storage_location,
            "AppId": app_id,
            "ReferenceId": reference_id,
            "UserData": _user_data(user_data),
        }
        received = self._clock()
        created = self._create("CreateUploadVideo", params, reference_id=reference_id)
        if created.ticket is not None:  # recovered through RefreshUploadVideo
            return created.ticket
        return self._ticket("CreateUploadVideo", created.response["VideoId"], created.response, received)

    def refresh_upload_video(self, *, video_id: str | None = None, reference_id: str | None = None) -> UploadTicket:
        if not (video_id or reference_id):
            raise ValueError("refresh_upload_video needs video_id or reference_id")
        received = self._clock()
        resp = self._call("RefreshUploadVideo", {"VideoId": video_id, "ReferenceId": reference_id})
        return self._ticket("RefreshUploadVideo", resp.get("VideoId") or video_id or "", resp, received)

    def create_upload_image(
        self,
        *,
        image_type: str,
        image_ext: str,
        title: str | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
        cate_id: int | None = None,
        storage_location: str | None = None,
        app_id: str | None = None,
        user_data: str | Mapping[str, Any] | None = None,
        original_file_name: str | None = None,
    ) -> UploadTicket:
        params = {
            "ImageType": image_type,
            "ImageExt": image_ext,
            "Title": title,
            "Description": description,
            "Tags": _join_tags(tags),
            "CateId": cate_id,
            "StorageLocation": storage_location,
            "AppId": app_id,
            "UserData": _user_data(user_data),
            "OriginalFileName": original_file_name,
        }
        received = self._clock()
        resp = self._create("CreateUploadImage", params).response
        return self._ticket("CreateUploadImage", resp["ImageId"], resp, received)

    def create_upload_attached_media(
        self,
        *,
        business_type: str,
        media_ext: str,
        title: str,
        file_name: str | None = None,
        file_size: int | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
        cate_id: int | None = None,
        storage_location: str | None = None,
        app_id: str | None = None,
        user_data: str | Mapping[str, Any] | None = None,
    ) -> UploadTicket:
        params = {
            "BusinessType": business_type,
            "MediaExt": media_ext,
            "Title": title,
            "FileName": file_name,
            "FileSize": file_size,
            "Description": description,
            "Tags": _join_tags(tags),
            "CateIds": cate_id,
            "StorageLocation": storage_location,
            "AppId": app_id,
            "UserData": _user_data(user_data),
        }
        received = self._clock()
        resp = self._create("CreateUploadAttachedMedia", params).response
        return self._ticket("CreateUploadAttachedMedia", resp["MediaId"], resp, received)

    def upload_media_by_url(
        self,
        entries: Sequence[UrlUploadEntry],
        *,
        session_id: str | None = None,
        template_group_id: str | None = None,
        workflow_id: str | None = None,
        user_data: str | Mapping[str, Any] | None = None,
    ) -> dict[str, str]:
        """Submit URL pull jobs; returns url -> job id.

        Not idempotent by itself. With a `session_id` (the same for the same batch) an
        ambiguous submit is repeated with it: the service refuses a SessionId it saw in the
        last 10 minutes, and such a refusal means an earlier attempt landed, so the jobs are
        then looked up by URL instead of created again. Without one, a network error after
        sending raises an ambiguous CloudError instead of resubmitting."""
        _check_batch("upload_media_by_url", entries, 20)
        if not entries:
            return {}
        urls = [e.url for e in entries]
        if len(set(urls)) != len(urls):
            raise ValueError("upload_media_by_url: the same URL twice in one call would make two videos")
        params = _url_upload_params(entries)
        params.update(
            {
                "SessionId": session_id,
                "TemplateGroupId": template_group_id,
                "WorkflowId": workflow_id,
                "UserData": _user_data(user_data),
            }
        )
        created = self._create("UploadMediaByURL", params, session=session_id is not None)
        if created.repeated:  # an earlier attempt with this SessionId landed: find its jobs
            return self._newest_jobs(urls)
        resp = created.response
        encoded = params["UploadURLs"].split(",")
        out: dict[str, str] = {}
        jobs = resp.get("UploadJobs") or []
        for i, job in enumerate(jobs):
            source = job.get("SourceURL") or ""
            if source in encoded:
                source = urls[encoded.index(source)]
            elif source not in urls and unquote(source) in urls:
                source = unquote(source)
            if source not in urls and len(jobs) == len(urls):
                source = urls[i]  # the API answers in request order
            out[source] = job["JobId"]
        return out

    def url_upload_batches(self, entries: Sequence[UrlUploadEntry], limit: int = 20) -> list[list[int]]:
        """Indexes of `entries` grouped into UploadMediaByURL calls: at most `limit` per call,
        and a query string that stays under `MAX_QUERY_BYTES` (every parameter travels in it)."""
        return _pack([_query_bytes(_url_upload_params([e])) for e in entries], limit)

    def _newest_jobs(self, urls: Sequence[str]) -> dict[str, str]:
        """url -> the newest job submitted for it (after a submit that was refused as a repeat)."""
        out: dict[str, str] = {}
        for i in range(0, len(urls), 10):
            jobs, _ = self.get_url_upload_infos_by_urls(urls[i : i + 10])
            for job in sorted(jobs, key=lambda j: j.creation_time or ""):
                out[job.url if job.url in urls else unquote(job.url)] = job.job_id
        return {u: out[u] for u in urls if u in out}

    def get_url_upload_infos(self, job_ids: Sequence[str]) -> tuple[list[UrlJob], list[str]]:
        """Returns (jobs, job ids that do not exist)."""
        _check_batch("get_url_upload_infos", job_ids, 10)
        if not job_ids:
            return [], []
        resp = self._call("GetURLUploadInfos", {"JobIds": ",".join(job_ids)})
        return [_url_job(item) for item in resp.get("URLUploadInfoList") or []], list(resp.get("NonExists") or [])

    def get_url_upload_infos_by_urls(self, urls: Sequence[str]) -> tuple[list[UrlJob], list[str]]:
        """Every job ever submitted for these source URLs (to adopt one after a crash);
        returns (jobs, urls that have none)."""
        _check_batch("get_url_upload_infos_by_urls", urls, 10)
        if not urls:
            return [], []
        resp = self._call("GetURLUploadInfos", {"UploadURLs": ",".join(quote(u, safe="") for u in urls)})
        jobs = [_url_job(item) for item in resp.get("URLUploadInfoList") or []]
        return jobs, [unquote(u) for u in resp.get("NonExists") or []]

    def cancel_url_upload_jobs(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Returns (canceled job ids, job ids that do not exist)."""
        _check_batch("cancel_url_upload_jobs", job_ids, 10)
        if not job_ids:
            return [], []
        resp = self._call("CancelUrlUploadJobs", {"JobIds": ",".join(job_ids)})
        return list(resp.get("CanceledJobs") or []), list(resp.get("NonExists") or [])

    def register_media(
        self,
        entries: Sequence[RegisterEntry],
        *,
        template_group_id: str | None = None,
        workflow_id: str | None = None,
    ) -> tuple[list[Registered], list[str]]:
        """Register existing OSS objects, all in one bucket (the service refuses a mix).
        Idempotent per FileURL, so it is retried like a read, and a batch too large for one
        query string goes in several calls. Results name the FileURLs as given in `entries`
        (the service may answer with another scheme)."""
        _check_batch("register_media", entries, 10)
        if len({e.storage_address for e in entries}) > 1:
            raise ValueError("register_media: all files of one call must be in the same bucket")
        registered: list[Registered] = []
        failed: list[str] = []
        for group in _pack([_query_bytes(_register_params([e])) for e in entries], 10):
            batch = [entries[i] for i in group]
            params = {
                **_register_params(batch),
                "TemplateGroupId": template_group_id,
                "WorkflowId": workflow_id,
            }
            resp = self._call("RegisterMedia", params)
            for item in resp.get("RegisteredMediaList") or []:
                url = _requested(item.get("FileURL") or "", batch)
                if url is not None:
                    new = _bool(item.get("NewRegister"))
                    registered.append(Registered(file_url=url, media_id=item["MediaId"], new_register=new))
            failed.extend(u for u in (_requested(f, batch) for f in resp.get("FailedFileURLs") or []) if u)
        return registered, failed

    # ---- reading -------------------------------------------------------------

    def get_video_infos(self, video_ids: Sequence[str]) -> tuple[dict[str, RemoteMedia], list[str]]:
        _check_batch("get_video_infos", video_ids, 20)
        if not video_ids:
            return {}, []
        try:
            resp = self._call("GetVideoInfos", {"VideoIds": ",".join(video_ids)})
        except CloudError as exc:
            if exc.code != VIDEO_NOT_FOUND:
                raise
            return {}, list(video_ids)  # vod-api.md §00: a 404 when no requested id exists
        found = {m.media_id: m for m in map(_video, resp.get("VideoList") or [])}
        return found, list(resp.get("NonExistVideoIds") or [])

    def get_videos_by_reference_ids(self, reference_ids: Sequence[str]) -> tuple[dict[str, RemoteMedia], list[str]]:
        _check_batch("get_videos_by_reference_ids", reference_ids, 20)
        if not reference_ids:
            return {}, []
        try:
            resp = self._call("GetVideoInfos", {"ReferenceIds": ",".join(reference_ids)})
        except CloudError as exc:
            if exc.code != VIDEO_NOT_FOUND:
                raise
            return {}, list(reference_ids)
        found = {m.reference_id or "": m for m in map(_video, resp.get("VideoList") or [])}
        return found, list(resp.get("NonExistReferenceIds") or [])

    def get_image_info(self, image_id: str) -> RemoteMedia | None:
        try:
            resp = self._call("GetImageInfo", {"ImageId": image_id})
        except CloudError as exc:
            if exc.code == IMAGE_NOT_FOUND:
                return None
            raise
        return _image(resp.get("ImageInfo") or {})

    def get_attached_media_infos(self, media_ids: Sequence[str]) -> tuple[dict[str, RemoteMedia], list[str]]:
        _check_batch("get_attached_media_infos", media_ids, 20)
        if not media_ids:
            return {}, []
        resp = self._call("GetAttachedMediaInfo", {"MediaIds": ",".join(media_ids)})
        found = {m.media_id: m for m in map(_attached, resp.get("AttachedMediaList") or [])}
        return found, list(resp.get("NonExistMediaIds") or [])

    def search_media(
        self, search_type: str, match: str, *, fields: Sequence[str] = (), page_size: int = 100
    ) -> Iterator[Hit]:
        """Yield a typed `Hit` for every item of MediaList, page by page, oldest first (stable while
        media are added).

        Without `fields` the service returns only MediaId, CreationTime and MediaType; with them,
        those fields too, in the item's `Video` / `Image` / `AttachedMedia` / `Audio` view.
        ReferenceId and UserData are neither searchable nor returned (vod-api.md §00).
        """
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be 1..100")
        page, seen = 1, 0
        while True:
            resp = self._call(
                "SearchMedia",
                {
                    "SearchType": search_type,
                    "Match": match,
                    "Fields": ",".join(fields) or None,
                    "SortBy": "CreationTime:Asc",
                    "PageNo": page,
                    "PageSize": page_size,
                },
            )
            items = resp.get("MediaList") or []
            yield from (hit for hit in (search_hit(search_type, item) for item in items) if hit is not None)
            seen += len(items)
            total = _int(resp.get("Total"))
            if len(items) < page_size or (total is not None and seen >= total):
                return
            page += 1

    # ---- updating and deleting ----------------------------------------------

    def update_video_info(self, video_id: str, fields: Mapping[str, Any]) -> None:
        """Change only the given fields (title, description, tags, cate_id, cover_url)."""
        params: dict[str, Any] = {"VideoId": video_id}
        params.update(_api_fields(fields, _VIDEO_FIELDS, "update_video_info"))
        if len(params) > 1:
            self._call("UpdateVideoInfo", params)

    def update_image_infos(self, updates: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Returns the ids that do not exist."""
        _check_batch("update_image_infos", updates, 20)
        return self._update_infos("UpdateImageInfos", "ImageId", _IMAGE_FIELDS, updates, "NonExistImageIds")

    def update_attached_media_infos(self, updates: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Returns the ids that do not exist."""
        _check_batch("update_attached_media_infos", updates, 20)
        return self._update_infos(
            "UpdateAttachedMediaInfos", "MediaId", _ATTACHED_FIELDS, updates, "NonExistMediaIds"
        )

    def _update_infos(
        self,
        action: str,
        id_field: str,
        names: Mapping[str, str],
        updates: Sequence[tuple[str, Mapping[str, Any]]],
        missing_key: str,
    ) -> list[str]:
        """One UpdateContent batch, in as many calls as keep each query string short."""
        content = [{id_field: i, **_api_fields(f, names, action)} for i, f in updates]
        sizes = [_query_bytes({"UpdateContent": json.dumps([c], ensure_ascii=False)}) for c in content]
        missing: list[str] = []
        for group in _pack(sizes, 20):
            payload = json.dumps([content[i] for i in group], ensure_ascii=False)
            resp = self._call(action, {"UpdateContent": payload})
            missing.extend(resp.get(missing_key) or [])
        return missing

    def delete_videos(self, video_ids: Sequence[str]) -> list[str]:
        """Physically delete videos; returns the ids that did not exist.
        Raises CloudError('Forbidden') naming the ids VOD refused (the others are gone)."""
        _check_batch("delete_videos", video_ids, 20)
        if not video_ids:
            return []
        try:
            resp = self._call("DeleteVideo", {"VideoIds": ",".join(video_ids)})
        except CloudError as exc:
            if exc.code != VIDEO_NOT_FOUND:
                raise
            return list(video_ids)  # none of them exists: already gone is done
        forbidden = list(resp.get("ForbiddenVideoIds") or [])
        if forbidden:
            raise self._error("Forbidden", f"VOD refused to delete videos: {', '.join(forbidden)}", retryable=False)
        return list(resp.get("NonExistVideoIds") or [])

    def delete_images(self, image_ids: Sequence[str]) -> list[str]:
        """Returns the ids that did not exist (already gone is done).

        DeleteImage answers 404 NoSuchResource for a missing image and has no list of missing
        ids (vod-api.md §00): a batch so refused is deleted again one image at a time."""
        _check_batch("delete_images", image_ids, 20)
        try:
            if image_ids:
                self._call("DeleteImage", {"DeleteImageType": "ImageId", "ImageIds": ",".join(image_ids)})
            return []
        except CloudError as exc:
            if exc.code != IMAGE_NOT_FOUND:
                raise
        if len(image_ids) == 1:
            return list(image_ids)
        return [i for i in image_ids if self.delete_images([i])]

    def delete_attached_media(self, media_ids: Sequence[str]) -> list[str]:
        """Returns the ids that did not exist."""
        _check_batch("delete_attached_media", media_ids, 20)
        if not media_ids:
            return []
        resp = self._call("DeleteAttachedMedia", {"MediaIds": ",".join(media_ids)})
        return list(resp.get("NonExistMediaIds") or [])

    # ---- the retry loop ------------------------------------------------------

    def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """An idempotent call: every retryable failure is retried within the policy's budget."""
        return call_with_retry(lambda: self._attempt(action, params), delays=self._policy.delays(), sleep=self._sleep)

    def _create(
        self, action: str, params: Mapping[str, Any], *, reference_id: str | None = None, session: bool = False
    ) -> Created:
        """A Create*: error responses mean "not done" and are retried; a request that may
        have landed (ambiguous network error) is never blindly repeated. With a SessionId
        (`session`) it is repeated as it is, and a refusal as a repeated session answers
        `Created(repeated=True)`: some attempt with that SessionId landed."""
        maybe_done = False  # an earlier attempt may have created the media

        def attempt() -> Created:
            nonlocal maybe_done
            try:
                return Created(self._attempt(action, params))
            except CloudError as exc:
                if session and _is_repeated_session(exc):
                    return Created(repeated=True)
                if exc.ambiguous:
                    if not session and reference_id is None:
                        raise self._ambiguous(action, exc) from exc
                    maybe_done = True
                    recovered = self._recover_video(reference_id) if reference_id else None
                    if recovered is not None:
                        return Created(ticket=recovered)
                elif maybe_done and reference_id and _is_duplicate_reference(exc):
                    recovered = self._recover_video(reference_id)
                    if recovered is not None:
                        return Created(ticket=recovered)
                raise

        try:
            return call_with_retry(attempt, delays=self._policy.delays(), sleep=self._sleep)
        except CloudError as final:
            if maybe_done:  # giving up while an attempt may still land somewhere
                raise self._ambiguous(action, final) from final
            raise

    def _ambiguous(self, action: str, exc: CloudError) -> CloudError:
        return self._error(
            exc.code,
            f"{action} may or may not have taken effect ({exc.api_message}); not repeated",
            status=exc.status,
            retryable=False,
            ambiguous=True,
        )

    def _recover_video(self, reference_id: str) -> UploadTicket | None:
        """After an ambiguous CreateUploadVideo: if the video exists, get a fresh ticket for it."""
        found, _ = self.get_videos_by_reference_ids([reference_id])
        video = found.get(reference_id)
        if video is None:
            return None
        return self.refresh_upload_video(video_id=video.media_id)

    def _attempt(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        self._budget.acquire(action)
        return self._gate.call(lambda: self._send(action, params))

    def _send(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        request = _request_class(action)()
        for key, value in params.items():
            if value is not None:
                request.add_query_param(key, value if isinstance(value, str) else str(value))
        self._prepare(request)
        error: CloudError | None = None
        try:
            body = self._acs.do_action_with_exception(request)
            try:
                resp = json.loads(body)
                if not isinstance(resp, dict):
                    raise ValueError("not an object")
                return resp
            except (ValueError, UnicodeDecodeError):
                # A 2xx we cannot read: the call probably took effect, so it is ambiguous for a Create*.
                error = self._error("SDK.InvalidResponse", f"{action} answered with a body that is not JSON",
                                    retryable=True, ambiguous=True)
                raise error from None
        except ServerException as exc:
            error = self._from_server_exception(exc)
            raise error from None
        except ClientException as exc:
            error = self._from_client_exception(exc)
            raise error from None
        except IndexError:
            # vod-api.md §0.6: the SDK itself crashes parsing a SignatureDoesNotMatch without ':'
            error = self._error("SignatureDoesNotMatch", "the server rejected the request signature", retryable=False)
            raise error from None
        finally:
            with self._lock:
                self.calls[action] += 1
            if self._observer is not None:
                self._observer(action, error.code if error is not None else None)

    # ---- translation ---------------------------------------------------------

    def _error(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        ambiguous: bool = False,
    ) -> CloudError:
        if retryable is None:
            retryable = is_retryable_code(code, status)
        message = scrub(message, self._secrets)
        if is_credentials_rejected(code):
            where = "RAM policy of the AccessKey" if code not in IDENTITY_REJECTED_CODES else "AccessKey pair"
            message = (f"{message} VOD refused the {where} vodsync uses: check ALIBABA_CLOUD_ACCESS_KEY_ID and "
                       "ALIBABA_CLOUD_ACCESS_KEY_SECRET (or credentials: in the config file)")
            return CredentialsRejected(code, message, status=status, request_id=request_id, retryable=False)
        return CloudError(code, message, status=status, request_id=request_id, retryable=retryable,
                          ambiguous=ambiguous)

    def _from_server_exception(self, exc: ServerException) -> CloudError:
        return self._error(
            exc.get_error_code() or "SDK.UnknownServerError",
            exc.get_error_msg() or "",
            status=exc.get_http_status(),
            request_id=exc.get_request_id(),
        )

    def _from_client_exception(self, exc: ClientException) -> CloudError:
        code, text = exc.get_error_code(), str(exc.get_error_msg() or "")
        if code != NETWORK_ERROR:
            return self._error(code or "SDK.ClientError", text, retryable=False)
        sent = not any(marker in text for marker in _NOT_SENT_MARKERS)
        return self._error(NETWORK_ERROR, _describe_network_error(text, self._acs_host), retryable=True, ambiguous=sent)

    def _ticket(self, action: str, media_id: str, resp: Mapping[str, Any], received: float) -> UploadTicket:
        try:
            addr = json.loads(base64.b64decode(resp["UploadAddress"]))
            auth = json.loads(base64.b64decode(resp["UploadAuth"]))
            address = UploadAddress(endpoint=addr["Endpoint"], bucket=addr["Bucket"], key=addr["FileName"],
                                    region=str(auth.get("Region") or self._settings.region),
                                    object_prefix=str(addr.get("ObjectPrefix") or ""))
            credential = UploadCredential(
                access_key_id=auth["AccessKeyId"],
                access_key_secret=auth["AccessKeySecret"],
                security_token=auth["SecurityToken"],
                deadline=_deadline(auth, received),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            # Never echo the blobs: UploadAuth carries a live credential.
            raise self._error(
                "SDK.InvalidUploadAuth",
                f"{action} for {media_id} returned an UploadAddress/UploadAuth that could not be decoded",
                retryable=False,
            ) from None
        return UploadTicket(media_id=media_id, address=address, credential=credential)

    @property
    def _acs_host(self) -> str:
        return urlsplit(self._settings.endpoint).netloc if self._settings.endpoint else f"vod.{self._settings.region}.aliyuncs.com"


class _CredentialGate:
    """Fail fast on credentials VOD refuses: until one call has been answered with the AccessKey
    accepted, calls go one at a time, and once VOD has said the key is unknown or the secret wrong,
    every later call raises that same error without being sent. (A RAM refusal is about one call,
    not the key: it is raised, not remembered.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accepted = False
        self._rejected: CredentialsRejected | None = None

    def call(self, send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if not self._accepted:
            with self._lock:
                if self._rejected is not None:
                    raise self._rejected
                if not self._accepted:
                    return self._first(send)
        return send()

    def _first(self, send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            resp = send()
        except CredentialsRejected as exc:
            if exc.code in IDENTITY_REJECTED_CODES:
                self._rejected = exc
            raise
        except CloudError as exc:
            if exc.code != NETWORK_ERROR:  # an answer that was not about the key: it was accepted
                self._accepted = True
            raise
        self._accepted = True
        return resp


# ---- how to reach the service (the one place) ---------------------------------


def _connect(settings: CloudSettings) -> tuple[AcsClient, Callable[[Any], None]]:
    """Build the AcsClient and the per-request setup for `settings`.

    With aliyunsdkcore 2.16.1 an explicit endpoint works as: port on the client,
    host and protocol on each request. A loopback endpoint gets an explicit
    "no proxy" map: the SDK reads HTTP(S)_PROXY itself and ignores NO_PROXY, but
    only when its `proxy` is falsy. The SDK's own retries are off (they only
    cover ECS anyway); ours are in VodClient.
    """
    credential: Any
    if settings.security_token:
        credential = StsTokenCredential(settings.access_key_id, settings.access_key_secret, settings.security_token)
    else:
        credential = AccessKeyCredential(settings.access_key_id, settings.access_key_secret)
    if settings.endpoint is None:
        scheme, host, port, proxy = "https", None, 443, None
    else:
        parts = urlsplit(settings.endpoint)
        scheme, host = parts.scheme, parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = {"http": None, "https": None} if is_loopback_url(settings.endpoint) else None
    acs = AcsClient(
        region_id=settings.region,
        credential=credential,
        auto_retry=False,
        max_retry_time=0,
        port=port,
        connect_timeout=settings.connect_timeout,
        timeout=settings.read_timeout,
        pool_size=16,
        proxy=proxy,
    )

    def prepare(request: Any) -> None:
        request.set_protocol_type(scheme)
        if host is not None:
            request.set_endpoint(host)

    return acs, prepare


# ---- small codecs ----------------------------------------------------------------


def _describe_network_error(text: str, host: str) -> str:
    lowered = text.lower()
    for needle, what in (
        ("connection refused", "connection refused"),
        ("connect timeout", "connect timeout"),
        ("read timed out", "read timeout"),
        ("connection reset", "connection reset"),
        ("connection aborted", "connection aborted"),
        ("remotedisconnected", "server closed the connection"),
        ("name resolution", "name resolution failed"),
        ("name or service not known", "name resolution failed"),
    ):
        if needle in lowered:
            return f"network error talking to {host}: {what}"
    return f"network error talking to {host}"


def _is_duplicate_reference(exc: CloudError) -> bool:
    text = f"{exc.code} {exc.api_message}".lower()
    return "referenceid" in text and any(w in text for w in ("duplicat", "already", "exists", "conflict", "in use"))


def _is_repeated_session(exc: CloudError) -> bool:
    """The refusal of a SessionId seen in the last 10 minutes (its code is not documented:
    the emulator's guess is InvalidParameter.SessionId; any error naming SessionId will do)."""
    return "sessionid" in f"{exc.code} {exc.api_message}".lower().replace("_", "")


def _deadline(auth: Mapping[str, Any], received: float) -> float:
    expire_utc = auth.get("ExpireUTCTime")
    if expire_utc:
        return datetime.fromisoformat(str(expire_utc).replace("Z", "+00:00")).timestamp()
    lifetime = auth.get("Expiration")
    return received + (int(lifetime) if lifetime not in (None, "") else DEFAULT_UPLOAD_AUTH_LIFETIME)


def _check_batch(name: str, items: Sequence[Any], limit: int) -> None:
    if isinstance(items, str):
        raise TypeError(f"{name} takes a sequence of items, not a string")
    if len(items) > limit:
        raise ValueError(f"{name} takes at most {limit} items per call, got {len(items)}")


def _join_tags(tags: Sequence[str] | None) -> str | None:
    if tags is None:
        return None
    if isinstance(tags, str):
        raise TypeError("tags must be a sequence of strings, not a string")
    return ",".join(tags) if tags else None


def _user_data(value: str | Mapping[str, Any] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _user_data_text(value: Any) -> str | None:
    """UserData as read back: a JSON string, or (some responses) already an object."""
    if value in (None, ""):
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
def _url_upload_params(entries: Sequence[UrlUploadEntry]) -> dict[str, Any]:
    """UploadURLs and UploadMetadatas of one call. vod-api.md §00: metadata applies only when
    its SourceURL equals an UploadURLs entry as the service receives it, so both carry the
    same string: the URL percent-encoded once (as the official samples do)."""
    encoded = [quote(e.url, safe="") for e in entries]
    metadatas = [
        _compact(
            {
                "SourceURL": source,
                "Title": e.title,
                "Description": e.description,
                "Tags": _join_tags(e.tags),
                "CateId": e.cate_id,
                "CoverURL": e.cover_url,
                "TemplateGroupId": e.template_group_id,
                "WorkflowId": e.workflow_id,
                "FileExtension": e.file_extension,
            }
        )
        for source, e in zip(encoded, entries, strict=True)
    ]
    return {"UploadURLs": ",".join(encoded), "UploadMetadatas": json.dumps(metadatas, ensure_ascii=False)}


def _register_params(entries: Sequence[RegisterEntry]) -> dict[str, Any]:
    metadatas = [
        _compact(
            {
                "FileURL": e.file_url,
                "Title": e.title,
                "Description": e.description,
                "Tags": _join_tags(e.tags),
                "CoverURL": e.cover_url,
                "CateId": e.cate_id,
            }
        )
        for e in entries
    ]
    return {"RegisterMetadatas": json.dumps(metadatas, ensure_ascii=False)}


def _requested(answered: str, entries: Sequence[RegisterEntry]) -> str | None:
    """The FileURL of `entries` that the service's `answered` one names, if any."""
    return next((e.file_url for e in entries if same_file_url(e.file_url, answered)), None)


def _query_bytes(params: Mapping[str, Any]) -> int:
    """Length of `params` in the query string, encoded as the SDK encodes them."""
    return sum(
        len(quote(k, safe="~")) + len(quote(str(v), safe="~")) + 2 for k, v in params.items() if v is not None
    )


def _pack(sizes: Sequence[int], limit: int, budget: int = MAX_QUERY_BYTES) -> list[list[int]]:
    """Indexes grouped in order: at most `limit` per group, their sizes within `budget`
    (an item over the budget on its own still goes, alone)."""
    groups: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        if not groups or len(groups[-1]) >= limit or used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += size
    return groups


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _api_fields(fields: Mapping[str, Any], names: Mapping[str, str], where: str) -> dict[str, Any]:
    unknown = set(fields) - set(names)
    if unknown:
        raise ValueError(f"{where}: fields not updatable here: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for ours, value in fields.items():
        if ours == "tags":
            value = ",".join(_tags_tuple(value))
        if value is None or value == "":
            continue  # the API documents no way to clear a field: "" is never sent (engine/diff.py says so)
        if names[ours] == "CateIds":
            value = str(value)  # a comma-separated list in the API, even for one id
        out[names[ours]] = value if isinstance(value, (str, int)) else str(value)
    return out


def _tags_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    return tuple(str(t) for t in value)


def _int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _opt(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _url_job(item: Mapping[str, Any]) -> UrlJob:
    return UrlJob(
        job_id=item.get("JobId", ""),
        url=item.get("UploadURL", ""),
        status=item.get("Status", ""),
        media_id=_opt(item.get("MediaId")),
        file_size=_int(item.get("FileSize")),
        error_code=_opt(item.get("ErrorCode")),
        error_message=_opt(item.get("ErrorMessage")),
        creation_time=_opt(item.get("CreationTime")),
    )


def _media(v: Mapping[str, Any], id_key: str, kind: MediaKind, **fields: Any) -> RemoteMedia:
    """The fields every kind of media answers alike, and the kind's own (`fields`)."""
    return RemoteMedia(
        media_id=v.get(id_key, ""),
        kind=kind,
        status=v.get("Status", ""),
        title=v.get("Title", ""),
        description=_opt(v.get("Description")),
        tags=_tags_tuple(v.get("Tags")),
        creation_time=_opt(v.get("CreationTime")),
        user_data=_user_data_text(v.get("UserData")),
        **fields,
    )


def _video(v: Mapping[str, Any]) -> RemoteMedia:
    return _media(v, "VideoId", "video", cate_id=_int(v.get("CateId")), cover_url=_opt(v.get("CoverURL")),
                  size=_int(v.get("Size")), reference_id=_opt(v.get("ReferenceId")))


def _image(v: Mapping[str, Any]) -> RemoteMedia:
    size = _int((v.get("Mezzanine") or {}).get("FileSize"))
    return _media(v, "ImageId", "image", cate_id=_int(v.get("CateId")), size=size)


def _attached(v: Mapping[str, Any]) -> RemoteMedia:
    categories = v.get("Categories") or []
    if isinstance(categories, Mapping):  # some responses nest the list one level deeper
        categories = categories.get("Category") or []
    cate_id = _int(categories[0].get("CateId")) if categories else None
    size = _int(v.get("FileSize") or (v.get("Mezzanine") or {}).get("FileSize"))
    return _media(v, "MediaId", "attached", cate_id=cate_id, size=size)
