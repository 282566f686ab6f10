"""Settings: the `vodsync.yaml` config file, environment overrides, and Alibaba Cloud credentials.

Owns the config models (pydantic, unknown keys refused), where relative paths
resolve (the config file's directory), the permission check that refuses a
group/world-readable file holding a secret, and `resolve_credentials` (env
first, then the file). No secret reaches an error message or a repr.

It also owns `explain_error`, the words for a pydantic error that this module,
the manifest loader and the drop-folder sidecars share, so every problem reads
"file:line: field: words a person understands" (lines come from `vodsync.yamldoc`).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    ValidationError,
)

from vodsync.api_limits import OPERATIONS
from vodsync.errors import ConfigError
from vodsync.yamldoc import node_line, parse_yaml_document, yaml_error_words

CONFIG_FILE_NAME = "vodsync.yaml"
ENV_ENDPOINT = "VODSYNC_ENDPOINT"
ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"

# --- pydantic errors in words ------------------------------------------------------------

_VALUE_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "true/false"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (_dt.datetime, "a date and time"),
    (_dt.date, "a date"),
    (bytes, "binary data"),
    (set, "a set"),
    (tuple, "a list"),
)

_EXPECTED_BY_TYPE = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "float_type": "a number",
    "path_type": "a path",
    "literal_error": "one of the listed values",
}


def describe_value(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    for kind, words in _VALUE_KINDS:
        if isinstance(value, kind):
            if kind is str and not value:
                return "an empty string"
            return words
    return type(value).__name__


def explain_error(
    error: Mapping[str, Any],
    *,
    expected: Mapping[str, str] | None = None,
    patterns: Mapping[str, str] | None = None,
    show_input: bool = True,
) -> str:
    """Words for one pydantic error dict (`ValidationError.errors()` item).

    `expected` maps a field name to what it should be ("a list of strings"),
    `patterns` to what its pattern means. With `show_input=False` no input value
    is quoted (for settings that may hold secrets).
    """
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    names = [p for p in error.get("loc", ()) if isinstance(p, str)]
    last = names[-1] if names else ""
    in_list = bool(error.get("loc")) and isinstance(error["loc"][-1], int)
    quoted = f" {value!r}"[:120] if show_input and isinstance(value, (str, int, float)) else ""

    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "invalid_key":
        return f"field names must be strings, got {describe_value(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}, got{quoted or ' ' + describe_value(value)}"
    if kind in _EXPECTED_BY_TYPE or kind.endswith("_type"):
        want = (expected or {}).get(last) if not in_list else None
        want = want or _EXPECTED_BY_TYPE.get(kind, "another type")
        got = describe_value(value)
        hint = ""
        if want == "a string" and isinstance(value, (int, float, bool, _dt.date)):
            hint = " (put the value in quotes to use it as text)"
        return f"expected {want}, got {got}{hint}"
    if kind in ("too_long", "string_too_long"):
        if isinstance(value, str):
            return f"must be at most {ctx.get('max_length')} characters, got {len(value)}"
        return f"must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length', '?')}"
    if kind in ("too_short", "string_too_short"):
        return (
            "must not be empty"
            if ctx.get("min_length") == 1
            else f"must have at least {ctx.get('min_length')}"
        )
    if kind == "string_pattern_mismatch":
        what = (patterns or {}).get(last) or f"must match {ctx.get('pattern')}"
        return f"{what}, got{quoted}" if quoted else what
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {
            "greater_than": "greater than",
            "greater_than_equal": "at least",
            "less_than": "less than",
            "less_than_equal": "at most",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {bound} {limit}, got{quoted}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "finite_number":
        return f"must be a finite number, got{quoted}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "type is required"
    return str(error.get("msg", "invalid value"))


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` was probably meant to be (a typo), or None."""
    hint = difflib.get_close_matches(word, list(choices), n=1)
    return hint[0] if hint else None


def unknown_field_words(field: str, known: Iterable[str], owner: str) -> str:
    """Words for a key nobody knows: the likely one ("did you mean"), else every known one."""
    known = list(known)
    hint = closest(field, known)
    if hint:
        return f"unknown field for {owner}; did you mean {hint}?"
    return f"unknown field for {owner}; known fields: {', '.join(sorted(known))}"


# --- The config file ------------------------------------------------------------------------------


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:9000")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, for example 127.0.0.1:9101")
    return value


def _title_template(value: str) -> str:
    try:
        value.format(stem="x", name="x.mp4", parent="x", folder="x", ext="mp4")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"can only use {{stem}}, {{name}}, {{ext}} and {{folder}} (or {{parent}}) "
            f"({exc.__class__.__name__}: {exc})"
        ) from None
    return value


def _api_operation(value: str) -> str:
    if value not in OPERATIONS:
        hint = closest(value, OPERATIONS)
        raise ValueError(
            f"unknown VOD operation {value!r}; "
            + (f"did you mean {hint}?" if hint else f"vodsync calls: {', '.join(sorted(OPERATIONS))}")
        )
    return value


# `api_limits:` maps an operation vodsync calls to the calls per second this account allows it.
ApiLimits = dict[
    Annotated[str, AfterValidator(_api_operation)], Annotated[float, Field(gt=0, allow_inf_nan=False)]
]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Paths come from YAML as strings; strict mode would insist on Path objects.
PathSetting = Annotated[Path, Field(strict=False)]


class CredentialsSettings(_Settings):
    access_key_id: Annotated[str, StringConstraints(min_length=1)]
    access_key_secret: SecretStr
    security_token: SecretStr | None = None


class DropFolderDefaults(_Settings):
    """Defaults for items found in a drop folder.

    Only the shape is checked here (config sits below `desired` and cannot import
    its limits); `vodsync.desired.dropfolder` validates the values against
    `MediaMetadata` when it builds items.
    """

    title_template: Annotated[str, AfterValidator(_title_template)] = "{stem}"
    tags: list[str] | None = None
    cate_id: int | None = None
    template_group_id: str | None = None
    description: str | None = None


class DropFolderSettings(_Settings):
    path: PathSetting
    # The folder's segment in item names (drop/<label>/<digest>); by default derived from the
    # directory's name. Set it to move or rename the directory without ingesting kept files again.
    label: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] | None = None
    kind: Literal["auto", "video", "image", "attached"] = "auto"
    defaults: DropFolderDefaults = DropFolderDefaults()
    after: Literal["keep", "move", "delete"] = "keep"
    stable_seconds: Annotated[float, Field(ge=0)] = 5


class DaemonSettings(_Settings):
    interval_seconds: Annotated[float, Field(gt=0)] = 600
    http: Annotated[str, AfterValidator(_host_port)] | None = None
    log_format: Literal["auto", "text", "json"] = "auto"


class Config(_Settings):
    """The settings of one vodsync run. Paths are absolute once `load_config` returns."""

    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$")] = "cn-shanghai"
    endpoint: Annotated[str, AfterValidator(_http_url)] | None = None
    manifests: PathSetting = Path("manifests")
    # A file path (SQLite, the default) or postgresql://USER@HOST:PORT/DB (state/location.py).
    state: Annotated[str | Path, Field(union_mode="left_to_right")] = Path(".vodsync/state.db")
    # How long an item's lease outlives its holder's last renewal (a shared state: docs/scale-out.md).
    lease_seconds: Annotated[float, Field(gt=0, le=60)] = 30
    roots: list[PathSetting] | None = None
    prune: bool = False
    max_delete: Annotated[int, Field(ge=0)] = 10
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    credentials: CredentialsSettings | None = None
    drop_folders: list[DropFolderSettings] = []
    daemon: DaemonSettings = DaemonSettings()
    # The state's namespace (engine/ownership.py): ReferenceIds and markers derive from it. Kept in
    # git, it survives a lost state file; a state recorded with another namespace is refused.
    namespace: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{2,31}$")] | None = None
    # Overrides of the documented per-account QPS (vodsync/api_limits.py), e.g. {CreateUploadVideo: 40}.
    api_limits: ApiLimits = {}
    # Where this config came from (None: built-in defaults); not a key of the file.
    _source: Path | None = PrivateAttr(None)
    # Found implicitly (./vodsync.yaml, no --config): the widening keys it sets, with their lines.
    _implicit_widening: dict[str, int | None] | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        return self._source


_CONFIG_EXPECTED = {
    "roots": "a list of directories",
    "drop_folders": "a list of drop folders",
    "tags": "a list of strings",
    "max_delete": "an integer",
    "concurrency": "an integer",
    "prune": "true or false",
    "credentials": "a mapping with access_key_id and access_key_secret",
    "api_limits": "a mapping of VOD operation to calls per second",
}
_CONFIG_PATTERNS = {
    "region": "must be a region ID such as cn-shanghai",
    "label": "must be 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
    "namespace": "must be 3-32 of a-z, 0-9 and '-', starting with a letter or digit",
}
_PATH_FIELDS = ("manifests",)


def _section(loc: Sequence[Any]) -> tuple[type[BaseModel], str]:
    """The settings model (and its name in words) that holds the key at `loc`."""
    path = tuple(part for part in loc[:-1] if isinstance(part, str))
    sections: dict[tuple[str, ...], type[BaseModel]] = {
        (): Config, ("credentials",): CredentialsSettings, ("drop_folders",): DropFolderSettings,
        ("drop_folders", "defaults"): DropFolderDefaults, ("daemon",): DaemonSettings,
    }
    return sections.get(path, Config), ".".join(path) or "the config"


def _config_error(path: Path, line: int | None, field_path: str | None, message: str) -> ConfigError:
    where = f"{path}:{line}" if line else str(path)
    return ConfigError(f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}")


def _loc_words(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping key (the part before it) that is wrong
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _holds_secret(data: Any) -> bool:
    creds = data.get("credentials") if isinstance(data, dict) else None
    return isinstance(creds, dict) and any(creds.get(k) for k in ("access_key_secret", "security_token"))


def _permission_problem(path: Path) -> str | None:
    """Words for a config file others can read (`None` if only its owner can)."""
    if os.name != "posix":
        return None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if not mode & 0o077:
        return None
    return (
        f"{path} holds credentials and is readable by group or others (mode {mode:04o}); "
        f"run: chmod 600 {path}  (or move the keys to {ENV_ACCESS_KEY_ID} / {ENV_ACCESS_KEY_SECRET})"
    )


def _check_permissions(path: Path, data: Any) -> None:
    problem = _permission_problem(path) if _holds_secret(data) else None
    if problem:
        raise ConfigError(problem)


# A secret's line in a config file that does not parse: `access_key_secret: VALUE` (any quoting).
_SECRET_LINE = re.compile(rb"(?:access_key_secret|security_token)\s*:[ \t]*([^\r\n]*)")


def _unparsable_config_error(path: Path, raw: bytes, exc: BaseException) -> ConfigError:
    """A YAML error in a config file: located, never quoting a secret back, and with the
    permission problem first when the file names a secret that others can read."""
    line, words = yaml_error_words(exc)
    secrets = [m.group(1).decode("utf-8", "replace").strip() for m in _SECRET_LINE.finditer(raw)]
    for value in secrets:
        bare = value.strip("'\"")
        for form in sorted(
            {value, bare, bare.lstrip("!&*"), *bare.lstrip("!&*").split()}, key=len, reverse=True
        ):
            if len(form) >= 3:
                words = words.replace(form, "***")
    error = _config_error(path, line, None, words)
    problem = _permission_problem(path) if secrets else None
    return ConfigError(f"{problem}\n  and {error}") if problem else error


STATE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(value: str | Path) -> bool:
    """Whether a `state` setting names a PostgreSQL database rather than a SQLite file."""
    return isinstance(value, str) and value.lower().startswith(STATE_URL_SCHEMES)


def _absolute(base: Path, value: Path) -> Path:
    return Path(os.path.normpath(base / value.expanduser()))


def load_config(path: Path | None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load `path` (or ./vodsync.yaml if it exists, else built-in defaults) with env overrides.

    Relative paths are resolved against the config file's directory (the current
    directory without a file). Raises `ConfigError` naming file, line and field.
    """
    env = os.environ if env is None else env
    data: Any = {}
    node = None
    implicit = path is None and Path(CONFIG_FILE_NAME).is_file()
    if implicit:
        path = Path(CONFIG_FILE_NAME)
    if path is not None:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            data, node = parse_yaml_document(raw.decode("utf-8-sig"), fast=False)
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise _config_error(path, line, None, "is not UTF-8 text") from None
        except Exception as exc:  # any YAML or constructor failure becomes a located ConfigError
            raise _unparsable_config_error(path, raw, exc) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _config_error(
                path, node_line(node), None, f"expected a mapping of settings, got {describe_value(data)}"
            )
        _check_permissions(path, data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            line = node_line(node, loc, key=err["type"] == "extra_forbidden")
            secret = "credentials" in loc
            if err["type"] == "extra_forbidden":
                model, owner = _section(loc)
                words = unknown_field_words(str(loc[-1]), model.model_fields, owner)
            else:
                words = explain_error(
                    err, expected=_CONFIG_EXPECTED, patterns=_CONFIG_PATTERNS, show_input=not secret
                )
            problems.append(str(_config_error(path or Path(CONFIG_FILE_NAME), line, _loc_words(loc), words)))
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None

    base = path.resolve().parent if path is not None else Path.cwd()
    update: dict[str, Any] = {name: _absolute(base, getattr(config, name)) for name in _PATH_FIELDS}
    if not is_url(config.state):
        update["state"] = _absolute(base, Path(config.state))
    if config.roots is not None:
        update["roots"] = [_absolute(base, r) for r in config.roots]
    update["drop_folders"] = [
        d.model_copy(update={"path": _absolute(base, d.path)}) for d in config.drop_folders
    ]
    endpoint = env.get(ENV_ENDPOINT)
    if endpoint:
        try:
            update["endpoint"] = _http_url(endpoint)
        except ValueError as exc:
            raise ConfigError(f"{ENV_ENDPOINT}: {exc}") from None
    config = config.model_copy(update=update)
    config._source = path.resolve() if path is not None else None
    if implicit:
        config._implicit_widening = {
            key: node_line(node, (key,), key=True) for key in WIDENING_KEYS if key in data
        }
    return config


# Settings that widen what a run may touch: which files it reads, where it sends requests and
# credentials, which state it writes, which folders it moves files in.
WIDENING_KEYS = ("roots", "endpoint", "state", "credentials", "drop_folders")
_WIDENING_INSTEAD = {
    "state": "--state FILE or VODSYNC_STATE",
    "endpoint": f"--endpoint URL or {ENV_ENDPOINT}",
    "credentials": f"{ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET}",
}


def refuse_implicit_widening(config: Config, repositories: Sequence[Path]) -> None:
    """Refuse a config found implicitly inside one of `repositories` that sets a widening key.

    A `vodsync.yaml` in the working directory may have come with the manifests, from
    whoever can get a commit merged; it must not be able to let manifests read `/`, send
    the signed requests elsewhere or move the state. `--config FILE` (a file someone
    chose) and configs outside the repositories may set them.
    """
    if not config._implicit_widening or config.source is None:
        return
    if not any(config.source.is_relative_to(os.path.realpath(r)) for r in repositories):
        return
    key, line = next(iter(config._implicit_widening.items()))
    instead = _WIDENING_INSTEAD.get(key)
    raise _config_error(
        config.source,
        line,
        key,
        f"a {CONFIG_FILE_NAME} found in the manifests' repository (not given with --config) cannot set "
        f"{key}: it widens what a run may touch. Pass it with --config FILE"
        + (f" or {instead}" if instead else "")
        + f" (settings it refuses: {', '.join(WIDENING_KEYS)})",
    )


# --- Credentials -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair (and STS token). repr/str show only a masked key ID, never the secret."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        key = self.access_key_id
        masked = key[:4] + "…" + key[-4:] if len(key) > 10 else "…"
        sts = ", sts" if self.security_token else ""
        return f"Credentials(access_key_id={masked!r}{sts})"

    __str__ = __repr__


def resolve_credentials(config: Config, *, env: Mapping[str, str] | None = None) -> Credentials:
    """Credentials from the environment first, else the config file, else a `ConfigError` saying what to set.

    The two sources are never mixed: a key ID from the environment with a secret
    from the file would be a confusing half-configuration.
    """
    env = os.environ if env is None else env
    key_id = env.get(ENV_ACCESS_KEY_ID, "").strip()
    secret = env.get(ENV_ACCESS_KEY_SECRET, "").strip()
    if key_id or secret:
        missing = [n for n, v in ((ENV_ACCESS_KEY_ID, key_id), (ENV_ACCESS_KEY_SECRET, secret)) if not v]
        if missing:
            present = ENV_ACCESS_KEY_SECRET if missing[0] == ENV_ACCESS_KEY_ID else ENV_ACCESS_KEY_ID
            raise ConfigError(f"{present} is set but {missing[0]} is not; set both (or neither)")
        return Credentials(key_id, secret, env.get(ENV_SECURITY_TOKEN, "").strip() or None)
    if config.credentials is not None:
        c = config.credentials
        token = c.security_token.get_secret_value() if c.security_token else None
        return Credentials(c.access_key_id, c.access_key_secret.get_secret_value(), token or None)
    where = (
        f" or add credentials: {{access_key_id, access_key_secret}} to {config.source} (chmod 600)"
        if (config.source)
        else f" or add credentials: {{access_key_id, access_key_secret}} to a {CONFIG_FILE_NAME} (chmod 600)"
    )
    raise ConfigError(
        f"no Alibaba Cloud credentials: set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} "
        f"(plus {ENV_SECURITY_TOKEN} for STS credentials){where}; or try it against the local "
        "emulator with --emulator"
    )
