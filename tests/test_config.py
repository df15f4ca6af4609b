"""Configuration: durations, URIs, environment overrides, precedence and error messages."""

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from kv_storage.config import PROPERTIES, Config, ConfigError, load_config
from schemas.durations import parse_duration_s
from schemas.settings import Property, at_least, build, properties_of, property_of, setting

URI = {"KV_STORAGE_ELASTICSEARCH_URI": "http://es:9200"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kv-storage.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30 seconds", 30.0),
        ("1 hour", 3600.0),
        ("1m", 60.0),
        ("500ms", 0.5),
        ("500 ms", 0.5),
        ("2 minutes", 120.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("1500", 1.5),
        (1500, 1.5),
        ("1 Second", 1.0),
    ],
)
def test_durations_as_the_original_wrote_them(raw: object, seconds: float) -> None:
    assert parse_duration_s(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "soon", "1 fortnight", "-5s", True, [1], "1 2 s"])
def test_invalid_durations_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match=r"duration|unit"):
        parse_duration_s(raw)


def test_defaults_are_the_originals() -> None:
    config = load_config(environ=URI)
    assert config.app.cache.max_size == 1000
    assert config.app.cache.expiration_time_s == 3600
    # Not the original's minute: revocation reaches every instance within seconds.
    assert config.app.cache.update_time_s == 1
    assert config.app.history.flush_size == 1000
    assert config.app.history.flush_timeout_s == 30
    assert config.app.history.retry_limit == 5
    assert config.app.request_timeout_s == 3
    assert config.app.default_page_size == 50
    assert config.elasticsearch.scroll.page_size == 1000
    assert config.elasticsearch.scroll.keep_alive_s == 60
    assert config.elasticsearch.key_max_bytes == 512
    assert config.elasticsearch.value_max_bytes is None
    assert config.elasticsearch.index_prefix == ""
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("uri", "hosts"),
    [
        ("elasticsearch://a:9201,b:9202", ("http://a:9201", "http://b:9202")),
        ("http://a:9201,b:9202", ("http://a:9201", "http://b:9202")),
        ("https://es.example.com:443", ("https://es.example.com:443",)),
        ("http://localhost", ("http://localhost:9200",)),
        ("http://127.0.0.1:9200/", ("http://127.0.0.1:9200",)),
        ("http://[::1]:9200", ("http://[::1]:9200",)),
        ("elasticsearch://es_node_1:9200", ("http://es_node_1:9200",)),
    ],
)
def test_elasticsearch_uri_forms(uri: str, hosts: tuple[str, ...]) -> None:
    assert load_config(environ={"KV_STORAGE_ELASTICSEARCH_URI": uri}).elasticsearch.hosts == hosts


@pytest.mark.parametrize(
    "uri",
    [
        "es",
        "ftp://a:1",
        "http://",
        "http://a:1,,b:2",
        "http://a:99999",
        "http://u:p@a:1",
        "http://a b",
    ],
)
def test_malformed_uri_names_the_property(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"^elasticsearch\.uri: "):
        load_config(environ={"KV_STORAGE_ELASTICSEARCH_URI": uri})


def test_uri_is_required() -> None:
    with pytest.raises(ConfigError, match=r"elasticsearch\.uri: not set"):
        load_config(environ={})


def test_file_sets_properties_by_their_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [elasticsearch]
        uri = "elasticsearch://es1:9200,es2:9200"
        index-prefix = "t1-"
        [elasticsearch.auth]
        username = "kv"
        password = "s3cret"
        [elasticsearch.limit.value]
        max-size = 1024
        [app.history]
        flush-size = 10
        flush-timeout = "2 seconds"
        [app]
        request-timeout = 5000
        """,
    )
    config = load_config(path, environ={})
    assert config.elasticsearch.hosts == ("http://es1:9200", "http://es2:9200")
    assert config.elasticsearch.index_prefix == "t1-"
    assert (config.elasticsearch.username, config.elasticsearch.password) == ("kv", "s3cret")
    assert config.elasticsearch.value_max_bytes == 1024
    assert config.app.history.flush_size == 10
    assert config.app.history.flush_timeout_s == 2
    assert config.app.request_timeout_s == 5


def test_environment_wins_over_file_and_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[elasticsearch]\nuri = "http://from-file:9200"\n[app.history]\nflush-size = 10\n',
    )
    config = load_config(
        path,
        environ={
            "KV_STORAGE_ELASTICSEARCH_URI": "http://from-env:9200",
            "KV_STORAGE_APP_CACHE_EXPIRATION_TIME": "5 minutes",
        },
    )
    assert config.elasticsearch.hosts == ("http://from-env:9200",)
    assert config.app.history.flush_size == 10  # the file
    assert config.app.cache.expiration_time_s == 300  # the environment
    assert config.app.history.retry_limit == 5  # the default


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[elasticsearch]\nuri = "http://via-env-path:9200"\n')
    config = load_config(environ={"KV_STORAGE_CONFIG": str(path)})
    assert config.elasticsearch.hosts == ("http://via-env-path:9200",)


def test_every_property_has_its_environment_variable() -> None:
    names = {prop.name: prop.env_var for prop in PROPERTIES}
    assert names["elasticsearch.uri"] == "KV_STORAGE_ELASTICSEARCH_URI"
    assert names["app.history.flush-size"] == "KV_STORAGE_APP_HISTORY_FLUSH_SIZE"
    assert (
        names["elasticsearch.limit.key.max-size"] == "KV_STORAGE_ELASTICSEARCH_LIMIT_KEY_MAX_SIZE"
    )
    assert len(set(names.values())) == len(names)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "KV_STORAGE_APP_HISTORY_FLUSH_SIZE",
            "-3",
            r"app\.history\.flush-size: must be at least 1",
        ),
        (
            "KV_STORAGE_APP_HISTORY_RETRY_LIMIT",
            "many",
            r"app\.history\.retry-limit: expected an integer",
        ),
        (
            "KV_STORAGE_APP_HISTORY_RETRY_LIMIT",
            "-1",
            r"app\.history\.retry-limit: must be at least 0",
        ),
        (
            "KV_STORAGE_ELASTICSEARCH_LIMIT_KEY_MAX_SIZE",
            "513",
            r"key\.max-size: must be between 1 and 512",
        ),
        ("KV_STORAGE_ELASTICSEARCH_LIMIT_VALUE_MAX_SIZE", "-2", r"value\.max-size: must be -1"),
        (
            "KV_STORAGE_APP_REQUEST_TIMEOUT",
            "0s",
            r"app\.request-timeout: must be a positive duration",
        ),
        (
            "KV_STORAGE_APP_CACHE_UPDATE_TIME",
            "often",
            r"app\.cache\.update-time: 'often' is not a duration",
        ),
        ("KV_STORAGE_SERVER_PORT", "70000", r"server\.port: must be between 0 and 65535"),
        ("KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX", "Upper-", r"index-prefix: .*upper-case"),
        ("KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX", "_x", r"index-prefix: .*starts with"),
        ("KV_STORAGE_ELASTICSEARCH_INDEX_PREFIX", "a*b", r"index-prefix: .*not allowed"),
        (
            "KV_STORAGE_ELASTICSEARCH_SCROLL_PAGE_SIZE",
            "20000",
            r"scroll\.page-size: must be between",
        ),
        (
            "KV_STORAGE_ADMIN_TOKEN",
            "short-token-of-31-characters-xx",
            r"admin\.token: must be at least 32 characters \(it has 31\); make one with",
        ),
        ("KV_STORAGE_SERVER_MAX_JSON_BODY_SIZE", "0", r"max-json-body-size: must be at least 1"),
        ("KV_STORAGE_SERVER_MAX_KEYS_PER_REQUEST", "x", r"max-keys-per-request: expected"),
        ("KV_STORAGE_ELASTICSEARCH_SCROLL_MAX_OPEN", "501", r"scroll\.max-open: must be between"),
        ("KV_STORAGE_APP_DOCS_ENABLED", "yes", r"app\.docs\.enabled: expected true or false"),
        (
            "KV_STORAGE_APP_HISTORY_BUFFER_SHARE_PER_STORAGE",
            "-1",
            r"app\.history\.buffer-share-per-storage: must be at least 0",
        ),
        (
            "KV_STORAGE_APP_HISTORY_BUFFER_SHARE_PER_STORAGE",
            "100001",
            r"app\.history\.buffer-share-per-storage: must be at most "
            r"app\.history\.buffer-size \(100000\), got 100001",
        ),
    ],
)
def test_bad_values_name_the_property(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={**URI, variable: value})


@pytest.mark.parametrize(
    ("buffer_size", "share", "expected"),
    [
        (None, None, 10_000),  # a tenth of the default 100,000
        ("500", None, 50),  # a tenth of whatever the buffer holds
        ("5", None, 1),  # at least one record
        ("500", "500", 500),  # the whole buffer: no share at all
        ("500", "7", 7),
    ],
)
def test_a_storages_share_of_the_history_buffer(
    buffer_size: str | None, share: str | None, expected: int
) -> None:
    environ = dict(URI)
    if buffer_size is not None:
        environ["KV_STORAGE_APP_HISTORY_BUFFER_SIZE"] = buffer_size
    if share is not None:
        environ["KV_STORAGE_APP_HISTORY_BUFFER_SHARE_PER_STORAGE"] = share
    assert load_config(environ=environ).app.history.buffer_share_per_storage == expected


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(environ={"KV_STORAGE_APP_HISTORY_FLUSH_SIZE": "0"})
    assert "elasticsearch.uri" in str(raised.value)
    assert "app.history.flush-size" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_username_without_password_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"elasticsearch\.auth\.password: must be set together"):
        load_config(environ={**URI, "KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME": "kv"})


def test_password_is_not_in_the_configuration_repr() -> None:
    config = load_config(
        environ={
            **URI,
            "KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME": "kv",
            "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD": "hunter2-secret",
        }
    )
    assert "hunter2-secret" not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[app.history]\nflush-sise = 10\n", r"app\.history\.flush-sise: unknown property"),
        ("[app\nx = 1", r"invalid TOML"),
        ('[app.history]\nflush-size = "ten"\n', r"app\.history\.flush-size: expected an integer"),
    ],
)
def test_bad_files_are_reported(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ=URI)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found"):
        load_config(tmp_path / "absent.toml", environ=URI)


def test_example_file_documents_every_property_and_loads() -> None:
    example = Path(__file__).parents[1] / "config" / "kv-storage.example.toml"
    text = example.read_text()
    for prop in PROPERTIES:
        assert prop.name.rsplit(".", 1)[-1] + " =" in text, prop.name
    config = load_config(example, environ=URI)
    assert config.elasticsearch.hosts == ("http://es:9200",)
    # A copy used as it is names no cluster: it must not quietly target localhost.
    with pytest.raises(ConfigError, match=r"elasticsearch\.uri: not set"):
        load_config(example, environ={})


# TLS, API keys and secrets from files -------------------------------------------------------

HTTPS = {"KV_STORAGE_ELASTICSEARCH_URI": "https://es:9200"}
FINGERPRINT = "ef0e0430c514fb8cc25f8715b5cc5083a82456985184073e019b19570a585f6c"


def test_fingerprint_with_or_without_colons() -> None:
    colons = ":".join(FINGERPRINT[i : i + 2] for i in range(0, 64, 2)).upper()
    for given in (FINGERPRINT, colons, f" {colons} "):
        config = load_config(environ={**HTTPS, "KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT": given})
        assert config.elasticsearch.fingerprint == FINGERPRINT


def test_ca_file_is_kept_and_checked(tmp_path: Path) -> None:
    ca = "/etc/ssl/certs/ca-certificates.crt"
    config = load_config(environ={**HTTPS, "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": ca})
    assert config.elasticsearch.ca_file == ca
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for path, reason in ((tmp_path / "absent.pem", "No such file"), (not_pem, "no PEM")):
        with pytest.raises(ConfigError, match=rf"^elasticsearch\.tls\.ca-file: .*{reason}"):
            load_config(environ={**HTTPS, "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": str(path)})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT": "abc"},
            r"^elasticsearch\.tls\.fingerprint: expected .* 64 hex digits",
        ),
        (
            {**URI, "KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT": FINGERPRINT},
            r"^elasticsearch\.tls\.fingerprint: only applies to https:// addresses",
        ),
        (
            {**URI, "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": "/etc/ssl/certs/ca-certificates.crt"},
            r"^elasticsearch\.tls\.ca-file: only applies to https://",
        ),
        (
            {
                "KV_STORAGE_ELASTICSEARCH_TLS_CA_FILE": "/etc/ssl/certs/ca-certificates.crt",
                "KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT": FINGERPRINT,
            },
            r"^elasticsearch\.tls\.fingerprint: set either it .* or elasticsearch\.tls\.ca-file",
        ),
        (
            {
                "KV_STORAGE_ELASTICSEARCH_TLS_VERIFY": "false",
                "KV_STORAGE_ELASTICSEARCH_TLS_FINGERPRINT": FINGERPRINT,
            },
            r"^elasticsearch\.tls\.verify: false turns off",
        ),
        (
            {"KV_STORAGE_ELASTICSEARCH_TLS_VERIFY": "maybe"},
            r"^elasticsearch\.tls\.verify: expected true or false",
        ),
        (
            {
                "KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY": "k",
                "KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME": "u",
                "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD": "p",
            },
            r"^elasticsearch\.auth\.api-key: set either it or elasticsearch\.auth\.username",
        ),
        (
            {"KV_STORAGE_SERVER_TLS_CERT_FILE": "/etc/hostname"},
            r"^server\.tls\.key-file: must be set together with server\.tls\.cert-file",
        ),
        (
            {
                "KV_STORAGE_SERVER_TLS_CERT_FILE": "/nonexistent/cert.pem",
                "KV_STORAGE_SERVER_TLS_KEY_FILE": "/nonexistent/key.pem",
            },
            r"^server\.tls\.cert-file: cannot read /nonexistent/cert\.pem",
        ),
        (
            {
                "KV_STORAGE_SERVER_TLS_CERT_FILE": "/etc/hostname",
                "KV_STORAGE_SERVER_TLS_KEY_FILE": "/etc/hostname",
            },
            r"^server\.tls\.cert-file: .* are not a PEM certificate and its private key",
        ),
    ],
)
def test_tls_combinations_that_cannot_work_name_the_property(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(environ={**HTTPS, **environ})
    assert "\n" not in str(raised.value)


def test_verify_defaults_to_true_and_false_is_accepted() -> None:
    assert load_config(environ=HTTPS).elasticsearch.verify_certs is True
    config = load_config(environ={**HTTPS, "KV_STORAGE_ELASTICSEARCH_TLS_VERIFY": "false"})
    assert config.elasticsearch.verify_certs is False


def test_api_key_in_both_forms_is_sent_encoded() -> None:
    for given in ("key-id:key-secret", "a2V5LWlkOmtleS1zZWNyZXQ="):
        config = load_config(environ={**HTTPS, "KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY": given})
        assert config.elasticsearch.api_key == "a2V5LWlkOmtleS1zZWNyZXQ="
        assert "a2V5" not in repr(config)


@pytest.mark.parametrize(
    ("prop", "variable"),
    [
        ("elasticsearch.auth.password", "KV_STORAGE_ELASTICSEARCH_AUTH_PASSWORD_FILE"),
        ("elasticsearch.auth.api-key", "KV_STORAGE_ELASTICSEARCH_AUTH_API_KEY_FILE"),
        ("admin.token", "KV_STORAGE_ADMIN_TOKEN_FILE"),
    ],
)
def test_secrets_come_from_files(tmp_path: Path, prop: str, variable: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret value of 32 characters or more\n")  # admin.token's least
    environ = {**HTTPS, variable: str(secret)}
    if prop == "elasticsearch.auth.password":
        environ["KV_STORAGE_ELASTICSEARCH_AUTH_USERNAME"] = "kv"
    config = load_config(environ=environ)
    value = {
        "elasticsearch.auth.password": config.elasticsearch.password,
        "elasticsearch.auth.api-key": config.elasticsearch.api_key,
        "admin.token": config.admin.token,
    }[prop]
    assert value == "s3cret value of 32 characters or more"  # one trailing newline removed

    with pytest.raises(ConfigError, match=rf"^{prop}: both {variable[:-5]} and {variable} are set"):
        load_config(environ={**environ, variable[:-5]: "x"})
    with pytest.raises(
        ConfigError, match=rf"^{prop}: cannot read .*absent \(named by {variable}\)"
    ):
        load_config(environ={**environ, variable: str(tmp_path / "absent")})


def test_only_secrets_have_file_variables(tmp_path: Path) -> None:
    path = tmp_path / "uri"
    path.write_text("http://from-file:9200")
    with pytest.raises(ConfigError, match=r"elasticsearch\.uri: not set"):
        load_config(environ={"KV_STORAGE_ELASTICSEARCH_URI_FILE": str(path)})


def test_a_secret_file_keeps_inner_newlines_and_strips_one_crlf(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"line1 of a token of 32 characters\nline2\r\n")
    config = load_config(environ={**URI, "KV_STORAGE_ADMIN_TOKEN_FILE": str(path)})
    assert config.admin.token == "line1 of a token of 32 characters\nline2"


# Each setting is written once: as its field ------------------------------------------------


def _leaves(section: type, path: str = "") -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every field of ``section`` that holds a value, nested sections walked, by the dotted
    attribute path that reaches it (read here without ``schemas.settings``' own walk)."""
    hints = typing.get_type_hints(section)
    found: list[tuple[str, dataclasses.Field[Any]]] = []
    for field in dataclasses.fields(section):
        kind = hints[field.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            found += _leaves(kind, f"{path}{field.name}.")
        else:
            found.append((f"{path}{field.name}", field))
    return found


def _value(config: object, path: str) -> object:
    for name in path.split("."):
        config = getattr(config, name)
    return config


def _valid(prop: Property, raw: str) -> bool:
    try:
        prop.parse(raw)
    except ValueError:
        return False
    return True


def test_every_field_is_a_property_and_every_property_a_field() -> None:
    """The model's fields and PROPERTIES are one list: no field without its property, no
    property that reaches no field, in the same order (that of the documentation's table)."""
    declared = [property_of(field) for _, field in _leaves(Config)]
    assert None not in declared, [path for path, field in _leaves(Config) if not property_of(field)]
    assert declared == list(PROPERTIES)


def test_the_loader_puts_each_property_into_its_field() -> None:
    """Set apart from the default where it can be, each property's value is found in the field
    that declares it, and in no other: the loader has no mapping of its own to get wrong."""
    given = {
        "elasticsearch.uri": "http://es:9200",
        "elasticsearch.auth.username": "user",
        "elasticsearch.auth.password": "secret",
        "elasticsearch.index-prefix": "p-",
        "elasticsearch.layout": "per-storage",
        "server.host": "127.0.0.1",
        "server.log-format": "logfmt",
        "app.history.buffer-share-per-storage": "2",  # at most the buffer: below the others
    }
    environ = {prop.env_var: given[prop.name] for prop in PROPERTIES if prop.name in given}
    used = {2}
    for prop in PROPERTIES:
        if prop.name not in given and type(prop.default) is int:
            # The least number valid for it, not its default and not given to another.
            number = next(
                n
                for n in range(3, 1 << 20)
                if n not in used and n != prop.default and _valid(prop, str(n))
            )
            used.add(number)
            environ[prop.env_var] = str(number)
    config = load_config(environ=environ)
    for path, field in _leaves(Config):
        declared = property_of(field)
        assert declared is not None
        raw = environ.get(declared.env_var, declared.default)
        assert _value(config, path) == declared.parse(raw), (path, declared.name)


def test_a_new_setting_is_written_once() -> None:
    """A field declared with setting() is a property (with its variable), has its parsed
    default, and is built from the parsed values by name: nothing else is to be written."""

    @dataclasses.dataclass(frozen=True)
    class Tuning:
        rounds: int = setting("tuning.rounds", "3", at_least(1), "How many rounds.")

    @dataclasses.dataclass(frozen=True)
    class Outer:
        tuning: Tuning

    (prop,) = properties_of(Outer)
    assert (prop.name, prop.env_var, prop.description) == (
        "tuning.rounds",
        "KV_STORAGE_TUNING_ROUNDS",
        "How many rounds.",
    )
    assert Tuning().rounds == 3
    assert build(Outer, {"tuning.rounds": 9}) == Outer(Tuning(9))


def test_a_field_that_is_no_setting_is_refused() -> None:
    """A value can only come from a declared property: a plain field would bypass them."""

    @dataclasses.dataclass(frozen=True)
    class Loose:
        count: int = 1

    with pytest.raises(TypeError, match=r"Loose\.count is neither a setting\(\) nor a section"):
        properties_of(Loose)
