"""Shared fixtures: one emulator per test session, reset before each test that asks for it.

- `emulator`: the running `vodsync.emulator.Emulator` (empty account, no faults, real time).
  Use its in-process helpers: `.url`, `.port`, `.state()`, `.advance(s)`, `.set_faults([...])`,
  `.calls()`, `.sts.mint(bucket, key)`.
- `vod_sdk_client`: an `aliyunsdkcore` AcsClient signed with the account key, pointed at it.
- `account_bucket`: an `oss2.Bucket` ("test-bucket", created) signed with the account key.
- `sts_bucket(bucket, key)`: an `oss2.Bucket` with a freshly minted upload token for that key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from pgserver import pg_url, postgres_server  # noqa: F401 - fixtures

from vodsync.emulator import Emulator

ACCESS_KEY_ID = "emulator"
ACCESS_KEY_SECRET = "emulator-secret"
REGION = "cn-shanghai"
TEST_BUCKET = "test-bucket"

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="session", autouse=True)
def _no_proxies() -> Iterator[None]:
    # aliyunsdkcore builds proxies from HTTP(S)_PROXY and ignores NO_PROXY (vod-api.md §1).
    saved = {name: os.environ.pop(name) for name in _PROXY_VARIABLES if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def emulator_server(_no_proxies: None) -> Iterator[Emulator]:
    emu = Emulator(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        transcode_seconds=0,
        url_job_seconds=0,
        region=REGION,
    ).start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_server: Emulator) -> Iterator[Emulator]:
    emulator_server.reset()
    emulator_server.set_faults([])
    yield emulator_server
    emulator_server.set_faults([])


@pytest.fixture
def vod_sdk_client(emulator: Emulator):
    from aliyunsdkcore.client import AcsClient

    # The SDK appends its own port to the endpoint: give the port here, the bare host below.
    client = AcsClient(ACCESS_KEY_ID, ACCESS_KEY_SECRET, REGION, port=emulator.port)
    client.add_endpoint(REGION, "vod", "127.0.0.1")
    return client


@pytest.fixture
def account_bucket(emulator: Emulator):
    import oss2

    bucket = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), emulator.url, TEST_BUCKET)
    bucket.create_bucket()
    return bucket


@pytest.fixture
def sts_bucket(emulator: Emulator) -> Callable:
    import oss2

    def make(bucket_name: str, key: str):
        auth = emulator.sts.mint(bucket_name, key)
        return oss2.Bucket(
            # Upload tokens must sign V4 (OSS refuses V1 on new buckets), with the bucket's region.
            oss2.StsAuth(auth["AccessKeyId"], auth["AccessKeySecret"], auth["SecurityToken"], auth_version="v4"),
            emulator.url,
            bucket_name,
            region=auth["Region"],
        )

    return make


@pytest.fixture
def sources():
    """A loopback HTTP server of files for URL items (see tests/sources.py)."""
    from sources import SourceServer

    server = SourceServer()
    yield server
    server.close()
