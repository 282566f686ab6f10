"""Who may call the emulator: VOD RPC signatures, OSS V1 and V4 signatures and STS upload tokens.

- `RpcVerifier` checks an RPC request (HMAC-SHA1/SHA256, SignatureVersion 1.0) against the
  one account key, plus the timestamp window and nonce replay rules of vod-api.md §1.
- `StsIssuer` mints the temporary credentials that go into an UploadAuth and remembers
  them (so OSS can check them later, and so they survive a restart via snapshot/restore).
- `OssAuthorizer` checks an OSS request (header `Authorization: OSS AK:sig` (V1) or
  `OSS4-HMAC-SHA256 Credential=...` (V4), or a V1 signed URL) and decides whether that
  principal may touch that bucket/key. Upload tokens must sign V4.

Everything raises the emulator's own error types; the server renders them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import threading
import time
from calendar import timegm
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from urllib.parse import quote

from vodsync.emulator.clock import Clock
from vodsync.emulator.errors import OssApiError, VodApiError

TIMESTAMP_WINDOW_SECONDS = 15 * 60
NONCE_WINDOW_SECONDS = 15 * 60


# --------------------------------------------------------------------------- RPC


def percent_encode(value: str) -> str:
    """RFC 3986 encoding used by RPC signatures (space -> %20, '*' -> %2A, '~' kept)."""
    return quote(value.encode("utf-8"), safe="-_.~")


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """`METHOD&%2F&percentEncode(sorted canonical query)`; `Signature` itself is excluded."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in pairs)
    return f"{method.upper()}&%2F&{percent_encode(canonical)}"


def rpc_signature(string_to_sign: str, secret: str, method: str = "HMAC-SHA1") -> str:
    digest = hashlib.sha256 if method.upper() == "HMAC-SHA256" else hashlib.sha1
    mac = hmac.new((secret + "&").encode("utf-8"), string_to_sign.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def _parse_rpc_timestamp(value: str) -> float:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return float(timegm(time.strptime(value, fmt)))
        except ValueError:
            continue
    raise VodApiError("InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.", 400)


def _missing(name: str) -> VodApiError:
    return VodApiError(
        "MissingParameter",
        f'The input parameter "{name}" that is mandatory for processing this request is not supplied.',
        400,
    )


class RpcVerifier:
    """Checks RPC requests signed with the account key.

    The SDK stamps requests with real time, while tests move the emulator clock. So the
    window is checked against `clock.now() - followed_seconds`, where `followed_seconds`
    is how much of the clock's advance the clients are taken to have made too (all of it
    by default, see `Emulator.advance`). Advancing with `client_follows=False` leaves the
    clients behind, which is how a test makes their timestamps stale.
    """

    def __init__(self, clock: Clock, access_key_id: str, access_key_secret: str) -> None:
        self._clock = clock
        self._access_key_id = access_key_id
        self._access_key_secret = access_key_secret
        self._nonces: dict[str, float] = {}
        self._lock = threading.Lock()
        self.followed_seconds = 0.0

    def reset(self) -> None:
        with self._lock:
            self._nonces.clear()
            self.followed_seconds = 0.0

    def verify(self, method: str, params: Mapping[str, str]) -> None:
        """Raise VodApiError unless `params` (query + form) carry a valid, fresh signature."""
        for name in ("AccessKeyId", "Signature", "Timestamp", "SignatureNonce"):
            if not params.get(name):
                raise _missing(name)
        if params["AccessKeyId"] != self._access_key_id:
            raise VodApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        sign_method = params.get("SignatureMethod", "HMAC-SHA1")
        if sign_method.upper() not in ("HMAC-SHA1", "HMAC-SHA256"):
            raise VodApiError(
                "InvalidSignatureMethod", "Specified signature method is not supported.", 400
            )

        sent_at = _parse_rpc_timestamp(params["Timestamp"])
        expected_client_now = self._clock.now() - self.followed_seconds
        if abs(sent_at - expected_client_now) > TIMESTAMP_WINDOW_SECONDS:
            raise VodApiError("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)

        string_to_sign = rpc_string_to_sign(method, params)
        expected = rpc_signature(string_to_sign, self._access_key_secret, sign_method)
        if not hmac.compare_digest(expected, params["Signature"]):
            # aliyunsdkcore evaluates Message.split(':')[1]: the ':' is load-bearing.
            raise VodApiError(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + string_to_sign,
                400,
            )

        # Only a correctly signed request consumes its nonce.
        now = self._clock.now()
        nonce = params["SignatureNonce"]
        with self._lock:
            if len(self._nonces) > 10_000:
                horizon = now - NONCE_WINDOW_SECONDS
                self._nonces = {n: t for n, t in self._nonces.items() if t >= horizon}
            seen = self._nonces.get(nonce)
            if seen is not None and now - seen <= NONCE_WINDOW_SECONDS:
                raise VodApiError("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
            self._nonces[nonce] = now


# --------------------------------------------------------------------------- STS


_ALNUM = string.ascii_letters + string.digits


def _random_text(length: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class StsToken:
    access_key_id: str
    access_key_secret: str
    security_token: str
    bucket: str
    key: str
    expires_at: float
    prefix: bool = False  # M3U8 uploads: the token covers every key under `key`

    def covers(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket or not key:
            return False
        return key.startswith(self.key) if self.prefix else key == self.key


class StsIssuer:
    """Mints and remembers upload credentials scoped to one bucket and key."""

    def __init__(self, clock: Clock, ttl_seconds: int = 3000, region: str = "cn-shanghai") -> None:
        self._clock = clock
        self.ttl_seconds = int(ttl_seconds)
        self.region = region
        self._tokens: dict[str, StsToken] = {}
        self._lock = threading.Lock()

    def mint(self, bucket: str, key: str, *, prefix: bool = False) -> dict[str, str]:
        """The UploadAuth dict of vod-api.md §2 (`Expiration` is the lifetime in seconds)."""
        now = self._clock.now()
        token = StsToken(
            access_key_id="STS." + _random_text(24),
            access_key_secret=_random_text(40),
            security_token="CAIS" + base64.b64encode(secrets.token_bytes(180)).decode("ascii"),
            bucket=bucket,
            key=key,
            expires_at=now + self.ttl_seconds,
            prefix=prefix,
        )
        with self._lock:
            # Expired tokens are kept for a day so OSS can still say "expired" rather than "unknown".
            horizon = now - 86_400
            if len(self._tokens) > 1000:
                self._tokens = {k: t for k, t in self._tokens.items() if t.expires_at >= horizon}
            self._tokens[token.access_key_id] = token
        return {
            "SecurityToken": token.security_token,
            "AccessKeyId": token.access_key_id,
            "ExpireUTCTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.expires_at)),
            "AccessKeySecret": token.access_key_secret,
            "Expiration": str(self.ttl_seconds),
            "Region": self.region,
        }

    def lookup(self, access_key_id: str) -> StsToken | None:
        with self._lock:
            return self._tokens.get(access_key_id)

    def is_expired(self, token: StsToken) -> bool:
        return self._clock.now() >= token.expires_at

    def snapshot(self) -> dict:
        with self._lock:
            return {"tokens": [asdict(t) for t in self._tokens.values()]}

    def restore(self, data: Mapping) -> None:
        tokens = [StsToken(**t) for t in data.get("tokens", [])]
        with self._lock:
            self._tokens = {t.access_key_id: t for t in tokens}

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()


# --------------------------------------------------------------------------- OSS

# Copied from oss2.auth.ProviderAuth._subresource_key_set (oss2 2.19.1): only these
# query parameters are part of the V1 canonical resource.
OSS_SIGNED_SUBRESOURCES = frozenset(
    [
        "response-content-type", "response-content-language", "response-cache-control", "logging",
        "response-content-encoding", "acl", "uploadId", "uploads", "partNumber", "group", "link",
        "delete", "website", "location", "objectInfo", "objectMeta", "response-expires",
        "response-content-disposition", "cors", "lifecycle", "restore", "qos", "referer", "stat",
        "bucketInfo", "append", "position", "security-token", "live", "comp", "status", "vod",
        "startTime", "endTime", "x-oss-process", "symlink", "callback", "callback-var", "tagging",
        "encryption", "versions", "versioning", "versionId", "policy", "requestPayment",
        "x-oss-traffic-limit", "qosInfo", "asyncFetch", "x-oss-request-payer", "sequential",
        "inventory", "inventoryId", "continuation-token", "worm", "wormId", "wormExtend",
        "replication", "replicationLocation", "replicationProgress", "transferAcceleration", "cname",
        "metaQuery", "x-oss-ac-source-ip", "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id",
        "x-oss-ac-forward-allow", "resourceGroup", "style", "styleName", "x-oss-async-process",
        "regionList", "x-oss-write-get-object-response", "bucketArchiveDirectRead", "httpsConfig",
        "redundancyTransition", "x-oss-target-redundancy-type", "x-oss-redundancy-transition-taskid",
        "accessPoint", "accessPointPolicy", "publicAccessBlock", "x-oss-access-point-name",
        "requesterQosInfo", "qosRequester", "resourcePoolInfo", "resourcePool", "resourcePoolBuckets",
    ]
)


def oss_string_to_sign(
    method: str,
    headers: Mapping[str, str],
    bucket: str,
    key: str,
    params: Mapping[str, str],
    date: str | None = None,
) -> str:
    """V1 StringToSign; `headers` must have lower-case names. `date` overrides (signed URLs)."""
    if date is None:
        date = headers.get("x-oss-date") or headers.get("date", "")
    oss_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-oss-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    resource = f"/{bucket}/{key}" if bucket else "/"
    sub = sorted((k, v) for k, v in params.items() if k in OSS_SIGNED_SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    return "\n".join(
        [method.upper(), headers.get("content-md5", ""), headers.get("content-type", ""), date,
         canonical_headers + resource]
    )


def oss_signature(string_to_sign: str, secret: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass(frozen=True)
class OssPrincipal:
    """Who made an OSS request: the account itself, or an STS upload token."""

    access_key_id: str
    token: StsToken | None = None

    @property
    def is_account(self) -> bool:
        return self.token is None


V4_ALGORITHM = "OSS4-HMAC-SHA256"
V4_SIGNED_HEADERS = ("content-type", "content-md5")  # signed besides every x-oss-* header (oss2 2.19.1)


def _v4_encode(text: str, *, keep_slash: bool) -> str:
    """V4's URI encoding: RFC 3986 unreserved characters kept, everything else %XX (upper case)."""
    return quote(text.encode("utf-8"), safe="-_.~/" if keep_slash else "-_.~")


def oss_v4_canonical_request(
    method: str, headers: Mapping[str, str], bucket: str, key: str, params: Mapping[str, str],
    additional: tuple[str, ...] = (),
) -> str:
    """V4 CanonicalRequest; `headers` must have lower-case names. Every query parameter is signed."""
    uri = _v4_encode(f"/{bucket}/{key}" if bucket else "/", keep_slash=True)
    query = "&".join(
        f"{k}={v}" if v else k
        for k, v in sorted((_v4_encode(k, keep_slash=False), _v4_encode(v, keep_slash=False))
                           for k, v in params.items())
    )
    signed = sorted(
        (k, v) for k, v in headers.items() if k.startswith("x-oss-") or k in V4_SIGNED_HEADERS or k in additional
    )
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in signed)
    payload = headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    return "\n".join([method.upper(), uri, query, canonical_headers, ";".join(sorted(additional)), payload])


def oss_v4_signature(secret: str, date_time: str, scope: str, canonical_request: str) -> str:
    """Hex HMAC-SHA256 of the V4 StringToSign, with the key derived from secret, date, region, product."""
    string_to_sign = "\n".join(
        [V4_ALGORITHM, date_time, scope, hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()]
    )
    key = ("aliyun_v4" + secret).encode("utf-8")
    for part in scope.split("/"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Signed:
    """What a request claims: who signed it, how, and the signature to check."""

    version: str  # "v1" | "v4"
    access_key_id: str
    signature: str
    security_token: str
    date_override: str | None = None  # V1 signed URLs sign `Expires` in place of the date
    scope: str = ""  # V4: date/region/product/aliyun_v4_request
    additional: tuple[str, ...] = ()  # V4: AdditionalHeaders


def _parse_v4_authorization(value: str, security_token: str) -> _Signed:
    fields: dict[str, str] = {}
    for part in value[len(V4_ALGORITHM):].split(","):
        name, sep, field = part.strip().partition("=")
        if sep:
            fields[name] = field
    access_key_id, _, scope = fields.get("Credential", "").partition("/")
    if not access_key_id or not scope or not fields.get("Signature"):
        raise OssApiError("InvalidArgument", "Authorization header is invalid.", 400, "0002-00000001")
    additional = tuple(h for h in fields.get("AdditionalHeaders", "").lower().split(";") if h)
    return _Signed("v4", access_key_id, fields["Signature"], security_token, scope=scope, additional=additional)


class OssAuthorizer:
    def __init__(self, clock: Clock, access_key_id: str, access_key_secret: str, sts: StsIssuer) -> None:
        self._clock = clock
        self._account_id = access_key_id
        self._account_secret = access_key_secret
        self._sts = sts
        self.public_buckets: set[str] = set()  # anonymous GET/HEAD allowed (public-read ACL)

    def authorize(
        self, method: str, headers: Mapping[str, str], bucket: str, key: str, params: Mapping[str, str]
    ) -> OssPrincipal:
        """Check the signature and the principal's scope; `headers` have lower-case names.

        The account key may do anything (it owns every bucket here) and may sign V1 or V4. An
        STS token may only act on its own bucket and key, signed V4: VOD's storage buckets are
        new buckets, which OSS no longer lets V1 reach (vod-api.md §00). Bucket-level calls are
        the account's.
        """
        signed = self._claimed(method, headers, bucket, key, params)
        if signed is None:
            return OssPrincipal("anonymous")
        token = None
        if signed.access_key_id == self._account_id:
            secret = self._account_secret
        else:
            token = self._sts.lookup(signed.access_key_id)
            if token is None:
                raise OssApiError(
                    "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records.",
                    403, "0002-00000902",
                )
            if not hmac.compare_digest(signed.security_token, token.security_token):
                raise OssApiError(
                    "InvalidSecurityToken", "The security token you provided is invalid.", 403, "0002-00000008"
                )
            if self._sts.is_expired(token):
                raise OssApiError(
                    "SecurityTokenExpired", "The security token you provided has expired.", 403, "0002-00000007"
                )
            if signed.version != "v4":
                # Code and message are a guess; the EC and the status are vod-api.md §00's.
                raise OssApiError(
                    "AccessDenied", "V1 signature is not supported for this bucket, use V4 signature "
                    "(OSS4-HMAC-SHA256).", 403, "0002-00000080",
                )
            secret = token.access_key_secret

        if signed.version == "v4":
            self._check_v4(method, headers, bucket, key, params, signed, secret)
        else:
            string_to_sign = oss_string_to_sign(method, headers, bucket, key, params, signed.date_override)
            if not hmac.compare_digest(oss_signature(string_to_sign, secret), signed.signature):
                raise _signature_mismatch()
        if token is not None and not token.covers(bucket, key):
            raise OssApiError(
                "AccessDenied", "You have no right to access this object because of bucket acl.", 403,
                "0003-00000001",
            )
        return OssPrincipal(signed.access_key_id, token)

    def _claimed(
        self, method: str, headers: Mapping[str, str], bucket: str, key: str, params: Mapping[str, str]
    ) -> _Signed | None:
        """The signature a request carries (header or V1 signed URL); None for an anonymous read
        of a public bucket. Raises for a malformed or missing one."""
        authorization = headers.get("authorization", "")
        if authorization.startswith(V4_ALGORITHM + " "):
            return _parse_v4_authorization(authorization, headers.get("x-oss-security-token", ""))
        if authorization:
            if not authorization.startswith("OSS ") or ":" not in authorization:
                raise OssApiError("InvalidArgument", "Authorization header is invalid.", 400, "0002-00000001")
            access_key_id, _, signature = authorization[4:].rpartition(":")
            return _Signed("v1", access_key_id, signature, headers.get("x-oss-security-token", ""))
        if "OSSAccessKeyId" in params and "Signature" in params:
            expires = params.get("Expires", "")
            try:
                expired = float(expires) < self._clock.now()
            except ValueError:
                expired = True
            if expired:
                raise OssApiError("AccessDenied", "Request has expired.", 403, "0002-00000069")
            return _Signed("v1", params["OSSAccessKeyId"], params["Signature"], params.get("security-token", ""),
                           date_override=expires)
        if method in ("GET", "HEAD") and bucket in self.public_buckets and key:
            return None
        raise OssApiError(
            "AccessDenied", "You have no right to access this object because of bucket acl.", 403, "0003-00000001",
        )

    def _check_v4(
        self, method: str, headers: Mapping[str, str], bucket: str, key: str, params: Mapping[str, str],
        signed: _Signed, secret: str,
    ) -> None:
        """The scope must name the request's date, this region and OSS; then the signature must match."""
        date_time = headers.get("x-oss-date", "")
        parts = signed.scope.split("/")
        if len(parts) != 4 or parts[0] != date_time[:8] or parts[2] != "oss" or parts[3] != "aliyun_v4_request":
            raise OssApiError("InvalidArgument", "Invalid credential in Authorization header.", 400, "0002-00000001")
        if parts[1] != self._sts.region:
            raise OssApiError(
                "SignatureDoesNotMatch", f"Invalid signing region in Authorization header: {parts[1]!r}; "
                f"this bucket is in {self._sts.region!r}.", 403, "0002-00000040",
            )
        canonical = oss_v4_canonical_request(method, headers, bucket, key, params, signed.additional)
        if not hmac.compare_digest(oss_v4_signature(secret, date_time, signed.scope, canonical), signed.signature):
            raise _signature_mismatch()


def _signature_mismatch() -> OssApiError:
    return OssApiError(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        403,
        "0002-00000040",
    )
