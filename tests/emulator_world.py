"""Test helper for the VOD-model tests: a `World` = a running emulator + the real SDKs.

`world` wraps the shared `emulator` / `vod_sdk_client` fixtures of conftest.py;
`slow_world` is its own emulator with transcode_seconds=10 so lifecycles can be
watched by moving the clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import oss2
import pytest
from aliyunsdkcore.client import AcsClient

from vodsync.emulator import Emulator

USER_BUCKET = "customer-media"


def decode(value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(value))


def sdk_client(emulator: Emulator) -> AcsClient:
    client = AcsClient(emulator.access_key_id, emulator.access_key_secret, emulator.region,
                       port=emulator.port, timeout=15, connect_timeout=5)
    client.add_endpoint(emulator.region, "vod", "127.0.0.1")
    return client


class World:
    def __init__(self, emulator: Emulator, client: AcsClient) -> None:
        self.emulator = emulator
        self.client = client
        self.model = emulator.model
        self.endpoint = emulator.endpoint

    def vod(self, request_cls: type, **params: Any) -> dict[str, Any]:
        """Run one aliyunsdkvod request; ServerException on an error answer."""
        request = request_cls()
        for name, value in params.items():
            getattr(request, f"set_{name}")(value)
        return self.vod_common(request)

    def vod_common(self, request: Any) -> dict[str, Any]:
        request.set_protocol_type("http")
        return json.loads(self.client.do_action_with_exception(request))

    def advance(self, seconds: float) -> None:
        self.emulator.advance(seconds)

    def upload(self, created: dict[str, str], data: bytes) -> None:
        """PUT `data` with oss2 exactly as a client would, from a Create*/Refresh answer."""
        address, auth = decode(created["UploadAddress"]), decode(created["UploadAuth"])
        sts = oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"], auth_version="v4")
        oss2.Bucket(sts, address["Endpoint"], address["Bucket"], region=auth["Region"]).put_object(
            address["FileName"], data)

    def bucket(self) -> str:
        """A customer bucket outside VOD storage (for RegisterMedia)."""
        self.emulator.oss.ensure_bucket(USER_BUCKET)
        return USER_BUCKET

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        account = oss2.Auth(self.emulator.access_key_id, self.emulator.access_key_secret)
        oss2.Bucket(account, self.endpoint, bucket).put_object(key, data)

    def head(self, bucket: str, key: str) -> int | None:
        info = self.emulator.oss.head(bucket, key)
        return None if info is None else info.size

    def file_url(self, bucket: str, key: str) -> str:
        return f"{self.endpoint}/{bucket}/{quote(key, safe='/')}"


@pytest.fixture
def world(emulator: Emulator, vod_sdk_client: AcsClient) -> World:
    """The shared, freshly reset emulator of conftest.py (transcode_seconds=0, url_job_seconds=0)."""
    return World(emulator, vod_sdk_client)


@pytest.fixture
def slow_world() -> Iterator[World]:
    with Emulator(port=0, transcode_seconds=10, url_job_seconds=0) as emulator:
        yield World(emulator, sdk_client(emulator))
