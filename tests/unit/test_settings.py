"""Settings resolve in one order, and the key never shows itself."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
from pathlib import Path

import platformdirs
import pytest
from platformdirs.macos import MacOS
from platformdirs.unix import Unix

from nanobanana_jupyter import ConfigurationError, MissingAPIKeyError, SecretKey, Settings
from nanobanana_jupyter._store.records import TaskRecord
from nanobanana_jupyter._wire.errors import MIN_SECRET_CHARS, NanoBananaError, redact
from nanobanana_jupyter._wire.models import TaskStatus
from nanobanana_jupyter._wire.settings import HISTORY_FILE, default_data_dir, read_dotenv


def test_argument_beats_environment_beats_default(sentinel_key: str) -> None:
    """An explicit argument wins over the environment, which wins over the default."""
    env = {"NANOBANANA_API_KEY": "dk-fromenv", "NANOBANANA_BASE_URL": "http://127.0.0.1:9"}
    s = Settings.resolve(api_key=sentinel_key, environ=env)
    assert s.api_key == SecretKey(sentinel_key) and s.key_source == "argument"
    assert s.base_url == "http://127.0.0.1:9"
    s = Settings.resolve(environ=env)
    assert s.api_key == SecretKey("dk-fromenv") and s.key_source == "NANOBANANA_API_KEY"
    assert Settings.resolve(environ={}).base_url == "https://api.defapi.org"


def test_defapi_key_variable_is_read_too() -> None:
    """DEFAPI_API_KEY works when NANOBANANA_API_KEY is not set."""
    s = Settings.resolve(environ={"DEFAPI_API_KEY": "dk-alt"})
    assert s.api_key == SecretKey("dk-alt") and s.key_source == "DEFAPI_API_KEY"


def test_dotenv_is_read_after_the_environment(tmp_path: Path) -> None:
    """A .env file supplies the key when the environment does not."""
    dotenv = tmp_path / ".env"
    dotenv.write_text('# comment\nexport NANOBANANA_API_KEY="dk-dotenv"\nOTHER=1\n')
    s = Settings.resolve(environ={}, dotenv=dotenv)
    assert s.api_key == SecretKey("dk-dotenv") and s.key_source == ".env"
    s = Settings.resolve(environ={"NANOBANANA_API_KEY": "dk-env"}, dotenv=dotenv)
    assert s.key_source == "NANOBANANA_API_KEY"


def test_colab_secret_is_the_last_source() -> None:
    """In Colab, a secret named NANOBANANA_API_KEY is used when nothing else is set."""
    s = Settings.resolve(
        environ={}, colab=lambda name: "dk-colab" if name == "NANOBANANA_API_KEY" else None
    )
    assert s.api_key == SecretKey("dk-colab") and s.key_source == "colab"


def test_missing_key_says_where_to_put_one() -> None:
    """With no key anywhere, the error lists the places and the sandbox."""
    s = Settings.resolve(environ={}, colab=lambda name: None)
    with pytest.raises(MissingAPIKeyError) as info:
        s.require_key()
    text = str(info.value)
    for hint in ("NANOBANANA_API_KEY", ".env", "Colab", "sandbox"):
        assert hint in text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://api.defapi.org", "unencrypted"),
        ("ftp://x", "not an http"),
        ("https://user:pw@api.defapi.org", "credentials"),
    ],
)
def test_unsafe_base_urls_are_refused(url: str, message: str) -> None:
    """A base URL that would leak the key, or is no URL, is refused with a reason."""
    with pytest.raises(ConfigurationError, match=message):
        Settings.resolve(base_url=url, environ={})


def test_loopback_base_url_may_be_http_but_does_not_allow_local_result_urls() -> None:
    """H9: a loopback base URL (the sandbox, or a local proxy to the API) may be plain http,
    but says nothing about image hosts: local result URLs stay refused unless asked for."""
    s = Settings.resolve(base_url="http://127.0.0.1:8000/", environ={})
    assert s.base_url == "http://127.0.0.1:8000" and not s.allow_local_urls
    assert not Settings.resolve(environ={}).allow_local_urls


@pytest.mark.parametrize(
    ("environ", "argument", "expected"),
    [
        ({"NANOBANANA_ALLOW_LOCAL_URLS": "1"}, None, True),
        ({"NANOBANANA_ALLOW_LOCAL_URLS": "no"}, None, False),
        ({}, True, True),
        ({"NANOBANANA_ALLOW_LOCAL_URLS": "1"}, False, False),
    ],
)
def test_local_result_urls_are_allowed_only_when_asked_for(
    environ: dict[str, str], argument: bool | None, expected: bool
) -> None:
    """H9: the argument, then NANOBANANA_ALLOW_LOCAL_URLS, decide; the default is to refuse."""
    extra = {} if argument is None else {"allow_local_urls": argument}
    assert Settings.resolve(environ=environ, **extra).allow_local_urls is expected


@pytest.mark.parametrize("value", ["abc", "-1", "0", "inf"])
def test_bad_numbers_are_refused(value: str) -> None:
    """A deadline that is not a positive finite number is a clear configuration error."""
    with pytest.raises(ConfigurationError):
        Settings.resolve(environ={"NANOBANANA_DEADLINE": value})


def test_key_is_never_shown(sentinel_key: str, caplog: pytest.LogCaptureFixture) -> None:
    """repr, str, format, logging, settings repr and describe() never contain the key."""
    key = SecretKey(sentinel_key)
    s = Settings.resolve(api_key=key, environ={})
    logging.getLogger("nanobanana_jupyter").warning("key is %s / %r", key, s)
    shown = [repr(key), str(key), f"{key}", f"{key!r}", repr(s), str(s.describe()), caplog.text]
    for text in shown:
        assert sentinel_key not in text
        assert sentinel_key[10:] not in text
    assert key.reveal() == sentinel_key


def test_key_refuses_pickle_and_json(sentinel_key: str) -> None:
    """The key cannot be pickled or JSON-dumped; copies are the same object."""
    key = SecretKey(sentinel_key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        pickle.dumps(Settings.resolve(api_key=key, environ={}))
    with pytest.raises(TypeError):
        json.dumps({"k": key})
    assert copy.deepcopy(key) is key and copy.copy(key) is key


@pytest.mark.parametrize("value", ["", "   ", "dk-a b", "dk-\x00"])
def test_malformed_keys_are_refused(value: str) -> None:
    """Empty keys or keys with spaces or control characters are refused."""
    with pytest.raises(ConfigurationError):
        SecretKey(value)


# -- H8: masking by value, whatever the key's shape ---------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "sk-live-9c1e5b7a3d2f4068",
        "Yb3kP0qLm7ZtR2wX",
        "dk-SENT.INEL5e6f7a8b9c0d",
        "a1b2/c3d4+e5f6==",
        'quote"back\\slash-k3y',
    ],
)
def test_a_key_of_any_shape_is_masked_by_value_in_every_escaped_form(value: str) -> None:
    """H8: once a SecretKey holds it, the key and its JSON/URL/HTML forms are masked."""
    from urllib.parse import quote, quote_plus

    SecretKey(value)
    tail = value[len(value) // 2 :]
    for form in (
        value,
        json.dumps(value)[1:-1],
        quote(value, safe=""),
        quote_plus(value),
        value.replace('"', "&quot;"),
    ):
        text = redact(f"Invalid API key: {form}.", limit=None)
        assert form not in text and tail not in text and "***" in text, text
        assert redact(text, limit=None) == text  # masking twice changes nothing
        assert tail not in str(NanoBananaError(f"server said {form}"))


def test_dk_shaped_keys_are_masked_whole_even_with_dots_and_slashes() -> None:
    """H8: the dk- pattern (second line of defence) no longer stops at a dot or a slash."""
    for text in ("dk-SENT.INEL0123abcd", "dk-abcd/efgh+ijkl==", "dk-abcd.efgh.ijkl"):
        assert redact(f"key {text} refused", limit=None) == "key dk-*** refused"
    assert redact("see dk-abcdef.", limit=None) == "see dk-***."


def test_short_keys_are_not_masked_by_value() -> None:
    """H8: a key under MIN_SECRET_CHARS is accepted but would mangle common words if masked."""
    short = "x" * (MIN_SECRET_CHARS - 1)
    SecretKey(short)
    assert redact(f"a {short} b", limit=None) == f"a {short} b"
    long = "y" * MIN_SECRET_CHARS
    SecretKey(long)
    assert redact(f"a {long} b", limit=None) == "a *** b"


def test_log_records_of_the_package_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """H8: a key formatted into a log call, or inside a logged traceback, is masked."""
    key = "tok_" + "Qw3rTy" * 4
    SecretKey(key)
    logger = logging.getLogger("nanobanana_jupyter")
    with caplog.at_level(logging.DEBUG, logger="nanobanana_jupyter"):
        logger.warning("server said %s", f"bad key {key}")
        try:
            raise KeyError(f"no entry for {key}")
        except KeyError:
            logger.exception("parsing failed")
    assert len(caplog.records) == 2
    assert key not in caplog.text and "***" in caplog.text
    for record in caplog.records:
        assert key not in record.getMessage() and key not in (record.exc_text or "")


def test_a_record_never_holds_a_key_or_url_credentials(sentinel_key: str) -> None:
    """H8/H11: prompt, references, reason and texts of a record are masked when it is built."""
    SecretKey(sentinel_key)
    record = TaskRecord(
        local_id="l",
        status=TaskStatus.FAILED,
        prompt=f"a cat {sentinel_key}",
        model="m",
        fingerprint="f",
        created_at=0.0,
        updated_at=0.0,
        references=("https://bob:s3cr3t@host.test/a.png", "sha256:00"),
        error=f"refused {sentinel_key}",
        texts=(f"echo {sentinel_key}",),
        result_urls=("https://u:p@cdn.test/x.png",),
    )
    assert record.prompt == "a cat dk-***"
    assert record.references == ("https://***@host.test/a.png", "sha256:00")
    assert record.error == "refused dk-***" and record.texts == ("echo dk-***",)
    assert record.result_urls == ("https://***@cdn.test/x.png",)
    assert record.replace(polls=1) == record.replace(polls=1).replace()


# -- issue 19.6: the .env file read by python-dotenv ----------------------------------------


def test_dotenv_multi_line_values_escapes_and_inline_comments(tmp_path: Path) -> None:
    """Quoted values may span lines; double quotes take escapes; a `` #`` after an unquoted
    value is a comment; a name without ``=`` is no value."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        'NANOBANANA_MODEL="google/\\"gem\\"\npix2"\n'
        "export NANOBANANA_BASE_URL=http://127.0.0.1:9 # the sandbox\n"
        "NOVALUE\n"
        "TAB=\"a\\tb\"\nRAW='a\\tb'\n",
        encoding="utf-8",
    )
    values = read_dotenv(dotenv)
    assert values["NANOBANANA_MODEL"] == 'google/"gem"\npix2'
    assert values["NANOBANANA_BASE_URL"] == "http://127.0.0.1:9"
    assert values["TAB"] == "a\tb" and values["RAW"] == "a\\tb"
    assert "NOVALUE" not in values
    s = Settings.resolve(environ={}, dotenv=dotenv, colab=lambda name: None)
    assert s.base_url == "http://127.0.0.1:9" and s.model == 'google/"gem"\npix2'


def test_dotenv_expands_variables_from_the_file_then_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${VAR}`` takes an earlier line of the file, else the process environment (not the
    ``environ`` mapping given to resolve); an unknown name expands to nothing."""
    monkeypatch.setenv("NB_TEST_SECRET_STORE", "dk-fromprocessenv")
    monkeypatch.delenv("NB_TEST_UNSET", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "HOST=127.0.0.1\n"
        "NANOBANANA_BASE_URL=http://${HOST}:9\n"
        "NANOBANANA_API_KEY=${NB_TEST_SECRET_STORE}\n"
        "EMPTY=x${NB_TEST_UNSET}y\n",
        encoding="utf-8",
    )
    assert read_dotenv(dotenv)["EMPTY"] == "xy"
    s = Settings.resolve(environ={}, dotenv=dotenv, colab=lambda name: None)
    assert s.base_url == "http://127.0.0.1:9"
    assert s.api_key == SecretKey("dk-fromprocessenv") and s.key_source == ".env"


@pytest.mark.parametrize(
    ("content", "read"),
    [
        # not UTF-8: the whole file is ignored, as before
        (b"NANOBANANA_API_KEY=dk-SENTINEL-0123456789abcdef\xff\xfe\n", {}),
        # an unclosed quote spoils its own statement only; the next line is still read
        (
            b'OTHER="never closed\nNANOBANANA_API_KEY=dk-SENTINEL-0123456789abcdef\n',
            {"NANOBANANA_API_KEY": "dk-SENTINEL-0123456789abcdef"},
        ),
        # a value without a name, stray quotes, a backslash, an open ${: nothing usable
        (b"= dk-SENTINEL-0123456789abcdef\n'\n\"\n\\\n${\n", {}),
    ],
)
def test_a_broken_dotenv_never_crashes_nor_shows_a_value(
    tmp_path: Path, content: bytes, read: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not UTF-8 or does not parse gives no error, and no value in any log
    (python-dotenv's warnings name the line only)."""
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(content)
    with caplog.at_level(logging.DEBUG):
        values = read_dotenv(dotenv)
        s = Settings.resolve(environ={}, dotenv=dotenv, colab=lambda name: None)
    assert values == read
    assert (s.api_key is None) is (not read)
    assert "SENTINEL" not in caplog.text and "0123456789abcdef" not in caplog.text


def test_unreadable_or_missing_dotenv_gives_no_values(tmp_path: Path) -> None:
    """A missing file, or a directory where the file should be, is no values and no error."""
    assert read_dotenv(tmp_path / "absent.env") == {}
    (tmp_path / "dir.env").mkdir()
    assert read_dotenv(tmp_path / "dir.env") == {}


def test_an_unusable_key_in_dotenv_is_refused_without_showing_it(tmp_path: Path) -> None:
    """A multi-line key (now possible in quotes) is refused, naming .env, never the key."""
    dotenv = tmp_path / ".env"
    dotenv.write_text('NANOBANANA_API_KEY="dk-SENTINEL-01234567\n89abcdef"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        Settings.resolve(environ={}, dotenv=dotenv, colab=lambda name: None)
    text = str(info.value)
    assert ".env" in text and "NANOBANANA_API_KEY" in text
    assert "SENTINEL" not in text and "89abcdef" not in text and "01234567" not in text


# -- issue 19.6: the data directory from platformdirs, today's directory still found -------


def _history_in(directory: Path, *, sandbox: bool = False) -> None:
    where = directory / "sandbox" if sandbox else directory
    where.mkdir(parents=True, exist_ok=True)
    (where / HISTORY_FILE).write_bytes(b"")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME, with no XDG_DATA_HOME or LOCALAPPDATA of whoever runs the tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_linux_data_dir_is_platformdirs_and_follows_xdg(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the directory is XDG_DATA_HOME's, else ~/.local/share: as platformdirs says."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platformdirs, "PlatformDirs", Unix)
    assert default_data_dir() == home / ".local" / "share" / "nanobanana-jupyter"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    assert default_data_dir() == home / "xdg" / "nanobanana-jupyter"


def test_linux_relative_xdg_data_home_keeps_an_existing_history(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative XDG_DATA_HOME is ignored by platformdirs (the XDG spec says so), but was
    followed before: a history kept there is still found."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platformdirs, "PlatformDirs", Unix)
    monkeypatch.chdir(home)
    monkeypatch.setenv("XDG_DATA_HOME", "relative")
    new = home / ".local" / "share" / "nanobanana-jupyter"
    assert default_data_dir() == new
    _history_in(Path("relative") / "nanobanana-jupyter")
    assert default_data_dir() == Path("relative") / "nanobanana-jupyter"


def test_macos_with_xdg_data_home_keeps_the_application_support_history(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On macOS platformdirs follows XDG_DATA_HOME when set; the package used
    ~/Library/Application Support regardless. A history there is still found; without one,
    platformdirs' answer is used."""
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platformdirs, "PlatformDirs", MacOS)
    support = home / "Library" / "Application Support" / "nanobanana-jupyter"
    assert default_data_dir() == support  # no XDG: both rules agree
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    new = Path(MacOS("nanobanana-jupyter", appauthor=False).user_data_dir)
    assert default_data_dir() == new
    if new == support:  # an older platformdirs that ignores XDG on macOS: nothing to keep
        return
    assert new == home / "xdg" / "nanobanana-jupyter"
    _history_in(support, sandbox=True)  # a sandbox history alone counts too
    assert default_data_dir() == support
    _history_in(support)
    assert default_data_dir() == support


def test_windows_local_appdata_and_a_redirected_known_folder(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Windows both rules name the local (not roaming) AppData; platformdirs asks the
    shell for the folder, the package read LOCALAPPDATA. Where they differ, a history kept
    under LOCALAPPDATA is still found."""
    monkeypatch.setattr(sys, "platform", "win32")
    local = tmp_path / "AppData" / "Local"
    monkeypatch.setenv("LOCALAPPDATA", str(local))
    asked: list[tuple[object, ...]] = []
    known_folder = local

    def shell_answer(appname: str, appauthor: object = None, *args: object, **kw: object) -> str:
        asked.append((appname, appauthor, kw.get("roaming", False)))
        return str(known_folder / appname)

    monkeypatch.setattr(platformdirs, "user_data_dir", shell_answer)
    assert default_data_dir() == local / "nanobanana-jupyter"
    assert asked[-1] == ("nanobanana-jupyter", False, False)  # no author folder, not roaming
    known_folder = tmp_path / "Redirected" / "Local"
    assert default_data_dir() == known_folder / "nanobanana-jupyter"
    _history_in(local / "nanobanana-jupyter")
    assert default_data_dir() == local / "nanobanana-jupyter"


def test_sandbox_history_is_kept_apart_under_the_default(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings for a sandbox with no data dir use ``<default>/sandbox``."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(platformdirs, "PlatformDirs", Unix)
    s = Settings.resolve(environ={}, sandbox=True, colab=lambda name: None)
    assert s.data_dir == home / ".local" / "share" / "nanobanana-jupyter" / "sandbox"
