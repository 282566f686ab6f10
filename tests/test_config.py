"""The config file, env overrides, the permission check and credential resolution (never leaking secrets)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from vodsync.config import Config, Credentials, load_config, resolve_credentials
from vodsync.errors import ConfigError

SECRET = "s3cr3t-SECRET-value-xyz"
TOKEN = "CAIS-token-value-abc"
NO_ENV: dict[str, str] = {}


def write_config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "vodsync.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    os.chmod(path, mode)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env=NO_ENV)
    assert config.region == "cn-shanghai"
    assert config.endpoint is None
    assert config.manifests == tmp_path / "manifests"
    assert config.state == tmp_path / ".vodsync" / "state.db"
    assert config.roots is None and config.prune is False
    assert (config.max_delete, config.concurrency) == (10, 4)
    assert config.drop_folders == [] and config.credentials is None
    assert (config.daemon.interval_seconds, config.daemon.http, config.daemon.log_format) == (
        600,
        None,
        "auto",
    )
    assert config.source is None


def test_cwd_vodsync_yaml_is_picked_up(tmp_path, monkeypatch):
    write_config(tmp_path, "region: cn-beijing\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(None, env=NO_ENV).region == "cn-beijing"


def test_full_file_and_relative_paths_resolve_against_the_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    path = write_config(
        conf_dir,
        """
        region: ap-southeast-1
        endpoint: http://127.0.0.1:9000
        manifests: ../lib/manifests
        state: state/vodsync.db
        roots: [.., /srv/media]
        prune: true
        max_delete: 0
        concurrency: 8
        drop_folders:
          - path: inbox
            kind: video
            defaults: {title_template: "{parent} - {stem}", tags: [inbox], cate_id: 5}
            after: move
            stable_seconds: 2.5
          - path: /abs/images
        daemon: {interval_seconds: 60, http: "127.0.0.1:9101", log_format: json}
        """,
    )
    config = load_config(path, env=NO_ENV)
    assert config.region == "ap-southeast-1" and config.endpoint == "http://127.0.0.1:9000"
    assert config.manifests == tmp_path / "lib" / "manifests"
    assert config.state == conf_dir / "state" / "vodsync.db"
    assert config.roots == [tmp_path, Path("/srv/media")]
    assert config.prune is True and config.max_delete == 0 and config.concurrency == 8
    inbox, images = config.drop_folders
    assert inbox.path == conf_dir / "inbox" and inbox.kind == "video" and inbox.after == "move"
    assert inbox.defaults.title_template == "{parent} - {stem}" and inbox.defaults.tags == ["inbox"]
    assert inbox.stable_seconds == 2.5
    assert images.path == Path("/abs/images") and images.kind == "auto" and images.after == "keep"
    assert images.defaults.title_template == "{stem}" and images.stable_seconds == 5
    assert config.daemon.http == "127.0.0.1:9101" and config.daemon.log_format == "json"
    assert config.source == path.resolve()


def test_env_endpoint_overrides_the_file(tmp_path):
    path = write_config(tmp_path, "endpoint: http://file:1\n")
    assert load_config(path, env={"VODSYNC_ENDPOINT": "http://env:2"}).endpoint == "http://env:2"
    with pytest.raises(ConfigError, match="VODSYNC_ENDPOINT"):
        load_config(path, env={"VODSYNC_ENDPOINT": "not-a-url"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("regoin: cn-shanghai\n", "vodsync.yaml:1: regoin: unknown field"),
        ("region: 5\n", "vodsync.yaml:1: region: expected a string, got an integer"),
        ("region: Shanghai\n", "vodsync.yaml:1: region: must be a region ID such as cn-shanghai"),
        ("# limits\nmax_delete: -1\n", "vodsync.yaml:2: max_delete: must be at least 0"),
        ("concurrency: many\n", "vodsync.yaml:1: concurrency: expected an integer, got a string"),
        ("prune: 'yes'\n", "vodsync.yaml:1: prune: expected true or false, got a string"),
        ("endpoint: ftp://x\n", "vodsync.yaml:1: endpoint: must be an http:// or https:// URL"),
        ("roots: /one\n", "vodsync.yaml:1: roots: expected a list of directories, got a string"),
        (
            "drop_folders:\n  - path: in\n    after: shred\n",
            "vodsync.yaml:3: drop_folders[0].after: must be one of",
        ),
        ("drop_folders:\n  - kind: video\n", "vodsync.yaml:2: drop_folders[0].path: is required"),
        (
            "drop_folders:\n  - path: in\n    label: My Inbox\n",
            "vodsync.yaml:3: drop_folders[0].label: must be 1-64 of a-z, 0-9",
        ),
        (
            "drop_folders:\n  - path: in\n    defaults: {title_template: '{nope}'}\n",
            "vodsync.yaml:3: drop_folders[0].defaults.title_template: can only use {stem}",
        ),
        ("daemon:\n  http: localhost\n", "vodsync.yaml:2: daemon.http: must be host:port"),
        ("daemon:\n  log_format: xml\n", "vodsync.yaml:2: daemon.log_format: must be one of"),
        ("- a\n", "vodsync.yaml:1: expected a mapping of settings, got a list"),
        ("region: [\n", "vodsync.yaml:2: invalid YAML"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, expected):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=NO_ENV)
    assert expected.replace("vodsync.yaml", str(path)) in str(caught.value)


def test_non_utf8_config(tmp_path):
    path = tmp_path / "vodsync.yaml"
    path.write_bytes(b"region: cn\xff\n")
    with pytest.raises(ConfigError, match=r"vodsync.yaml:1: is not UTF-8"):
        load_config(path, env=NO_ENV)


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", env=NO_ENV)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_readable_config_with_a_secret_is_refused(tmp_path, mode):
    path = write_config(
        tmp_path, f"credentials: {{access_key_id: LTAIexample, access_key_secret: {SECRET}}}\n", mode=mode
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=NO_ENV)
    message = str(caught.value)
    assert str(path) in message and "chmod 600" in message and f"{mode:04o}" in message
    assert SECRET not in message


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_token_alone_also_counts_and_0600_or_no_secret_is_fine(tmp_path):
    path = write_config(
        tmp_path,
        f"credentials: {{access_key_id: a, access_key_secret: '', security_token: {TOKEN}}}\n",
        mode=0o644,
    )
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(path, env=NO_ENV)
    path = write_config(
        tmp_path, f"credentials: {{access_key_id: LTAIexample, access_key_secret: {SECRET}}}\n", mode=0o600
    )
    assert load_config(path, env=NO_ENV).credentials is not None
    path = write_config(tmp_path, "region: cn-shanghai\n", mode=0o644)
    load_config(path, env=NO_ENV)


def test_credential_errors_never_show_the_secret(tmp_path):
    path = write_config(
        tmp_path, f"credentials:\n  access_key_id: 12345\n  access_key_secret: {SECRET}\n  extra: {SECRET}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=NO_ENV)
    message = str(caught.value)
    assert "credentials.access_key_id: expected a string, got an integer" in message
    assert "credentials.extra: unknown field" in message
    assert SECRET not in message


def test_config_repr_hides_the_secret(tmp_path):
    path = write_config(
        tmp_path,
        f"credentials: {{access_key_id: LTAIexample1234, access_key_secret: {SECRET}, security_token: {TOKEN}}}\n",
    )
    config = load_config(path, env=NO_ENV)
    for text in (repr(config), str(config), config.model_dump_json()):
        assert SECRET not in text and TOKEN not in text


# --- credentials ------------------------------------------------------------------------------


def config_with(tmp_path, creds: str | None) -> Config:
    return load_config(write_config(tmp_path, f"credentials: {creds}\n" if creds else "{}\n"), env=NO_ENV)


def test_env_credentials_win(tmp_path):
    config = config_with(tmp_path, "{access_key_id: FILEKEY, access_key_secret: filesecret}")
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "ENVKEY",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
    }
    assert resolve_credentials(config, env=env) == Credentials("ENVKEY", SECRET, TOKEN)


def test_file_credentials_when_env_is_empty(tmp_path):
    config = config_with(tmp_path, f"{{access_key_id: FILEKEY, access_key_secret: {SECRET}}}")
    assert resolve_credentials(config, env=NO_ENV) == Credentials("FILEKEY", SECRET, None)


def test_half_set_env_is_an_error_not_a_mix(tmp_path):
    config = config_with(tmp_path, f"{{access_key_id: FILEKEY, access_key_secret: {SECRET}}}")
    with pytest.raises(ConfigError) as caught:
        resolve_credentials(config, env={"ALIBABA_CLOUD_ACCESS_KEY_ID": "ENVKEY"})
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="ALIBABA_CLOUD_ACCESS_KEY_ID is not"):
        resolve_credentials(config, env={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET})


def test_no_credentials_says_exactly_what_to_set(tmp_path):
    config = config_with(tmp_path, None)
    with pytest.raises(ConfigError) as caught:
        resolve_credentials(config, env=NO_ENV)
    message = str(caught.value)
    for name in (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ):
        assert name in message
    assert str(config.source) in message and "chmod 600" in message


def test_credentials_repr_and_str_hide_secret_and_token():
    creds = Credentials("LTAI5tExampleKeyId", SECRET, TOKEN)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in text and TOKEN not in text and "LTAI5tExampleKeyId" not in text
    assert "LTAI" in repr(creds)
    with pytest.raises(AttributeError):
        creds.access_key_secret = "x"  # type: ignore[misc]


def test_title_template_may_name_the_folder(tmp_path):
    # docs/daemon.md offers {folder}; the drop folder fills it (and its alias {parent}).
    cfg = tmp_path / "vodsync.yaml"
    cfg.write_text("drop_folders:\n  - path: in\n    defaults: {title_template: '{folder}: {stem}'}\n")
    (folder,) = load_config(cfg).drop_folders
    assert folder.defaults.title_template == "{folder}: {stem}"
