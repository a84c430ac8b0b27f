"""Settings, resolved in one place and one order: argument, environment, file, default.

Every environment variable the package reads is named in this module and nowhere else.
Nothing is read at import: :meth:`Settings.resolve` runs when a client or session is built.
The API key lives in a :class:`SecretKey`, which never shows itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .errors import ConfigurationError, MissingAPIKeyError, register_secret

__all__ = ["ENV", "SecretKey", "Settings", "default_data_dir", "env_flag", "is_loopback_host"]

DEFAULT_BASE_URL = "https://api.defapi.org"
DEFAULT_MODEL = "google/gempix2"
HISTORY_FILE = "history.sqlite3"


class ENV:
    """Names of the environment variables, in one place."""

    API_KEY = "NANOBANANA_API_KEY"
    API_KEY_ALT = "DEFAPI_API_KEY"
    BASE_URL = "NANOBANANA_BASE_URL"
    MODEL = "NANOBANANA_MODEL"
    DATA_DIR = "NANOBANANA_DATA_DIR"
    DEADLINE = "NANOBANANA_DEADLINE"
    TIMEOUT = "NANOBANANA_TIMEOUT"
    ALLOW_LOCAL_URLS = "NANOBANANA_ALLOW_LOCAL_URLS"
    """Truthy: result images may come from loopback/private hosts and plain http (sandbox)."""
    SANDBOX = "NANOBANANA_SANDBOX"
    """Truthy: the base URL is a sandbox (``make lab``, ``make demo``): pretend credits, and
    the history kept apart in ``<data dir>/sandbox``."""
    WAIT = "NANOBANANA_WAIT"
    """Truthy: the magic blocks until done by default (Run All, nbclient, papermill)."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment variable says 1/true/yes/on."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


class SecretKey:
    """An API key that shows only a fingerprint in ``repr``, ``str`` and tracebacks.

    It refuses pickling, so it cannot end up in a file by accident; ``json`` refuses it as
    it refuses any unknown object. Call :meth:`reveal` where the key must really be sent.

    Building one registers the value with :func:`~nanobanana_jupyter._wire.errors.redact`,
    so the key is masked by value (whatever its shape) in every error, stored row, log
    record and output of this process, also when a server quotes it back. Keys shorter than
    8 characters are the exception: they are not masked by value (see ``MIN_SECRET_CHARS``).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("an API key must be a str")
        value = value.strip()
        if not value:
            raise ConfigurationError("the API key is empty")
        if any(c.isspace() for c in value) or not value.isprintable():
            raise ConfigurationError("the API key contains spaces or control characters")
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        """Return the key itself: only for the Authorization header."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """A short hash that tells keys apart without showing any of them."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SecretKey(fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretKey", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled: API keys never go to files")

    def __copy__(self) -> SecretKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretKey:
        return self


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback addresses (the sandbox and tests live there)."""
    if not host:
        return False
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


APP_DIR_NAME = "nanobanana-jupyter"


def default_data_dir() -> Path:
    """The per-user directory for history and images: platformdirs' user data directory.

    That is ``$XDG_DATA_HOME/nanobanana-jupyter`` or ``~/.local/share/nanobanana-jupyter``
    on Linux, ``~/Library/Application Support/nanobanana-jupyter`` on macOS (recent
    platformdirs follow ``XDG_DATA_HOME`` there too), and the local (not roaming) AppData
    folder's ``nanobanana-jupyter`` on Windows. platformdirs reads the process environment
    (``HOME``, ``XDG_DATA_HOME``, Windows' known folders), never a mapping passed in.

    Before platformdirs the package had its own rule (:func:`_former_data_dir`). Where the
    two differ (macOS with ``XDG_DATA_HOME`` set; a relative ``XDG_DATA_HOME``, which the XDG
    spec says to ignore; Windows when the shell's Local AppData is not where ``LOCALAPPDATA``
    points; Android) and the former directory holds a history (its own or its sandbox's),
    that directory is kept, so a history made before the change is still found.
    """
    import platformdirs

    new = Path(platformdirs.user_data_dir(APP_DIR_NAME, appauthor=False, roaming=False))
    former = _former_data_dir()
    if former != new and _holds_history(former):
        return former
    return new


def _former_data_dir() -> Path:
    """The rule of the versions before platformdirs, kept to find their histories."""
    import sys

    home = Path(os.environ.get("HOME") or Path.home())
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_DIR_NAME


def _holds_history(directory: Path) -> bool:
    try:
        return any((d / HISTORY_FILE).is_file() for d in (directory, directory / "sandbox"))
    except OSError:  # e.g. a directory we may not look into: not ours to use
        return False


def _check_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(
            f"base URL {url!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL!r}"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"base URL {url!r} would send the API key unencrypted; use https "
            "(plain http is allowed only for 127.0.0.1/localhost, e.g. the sandbox)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigurationError("the base URL must not hold credentials, a query or a fragment")
    return url


def _positive(name: str, value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a positive, finite number of seconds")
    return float(value)


def read_dotenv(path: Path) -> dict[str, str]:
    """The ``NAME=value`` pairs of a ``.env`` file, parsed by python-dotenv.

    Comments, ``export``, single and double quotes, quoted values over several lines,
    escapes inside double quotes (``\\n``, ``\\t``, ``\\"``) and ``${VAR}`` expansion. A
    ``${VAR}`` takes an earlier line of the same file, else the *process* environment
    (``os.environ``, python-dotenv's rule, as for every other tool that reads the file; not
    the ``environ`` mapping given to :meth:`Settings.resolve`); an unknown name expands to
    nothing. A name without ``=`` gives no value.

    The file is never a reason to fail: a missing, unreadable or non-UTF-8 file gives no
    values, and a statement that does not parse is skipped (python-dotenv logs a warning on
    the ``dotenv.main`` logger naming its line number, never its text).
    """
    from dotenv import dotenv_values

    try:
        values = dotenv_values(path, encoding="utf-8")
    except (OSError, UnicodeError, ValueError):
        return {}
    return {name: value for name, value in values.items() if name and value is not None}


def _colab_secret(name: str) -> str | None:
    """Read a Colab secret when running in Colab; ``None`` anywhere else."""
    import sys

    if "google.colab" not in sys.modules:
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    # Colab raises its own types for "no such secret" and "no access"; any of them means none.
    except Exception:
        return None
    return value if isinstance(value, str) and value.strip() else None


MISSING_KEY_HELP = (
    "No API key found. Set NANOBANANA_API_KEY (or DEFAPI_API_KEY) in the environment, "
    "put NANOBANANA_API_KEY=dk-... in a .env file in the working directory, add a Colab "
    "secret named NANOBANANA_API_KEY, or pass api_key=... to Session(). "
    "No key? Try offline with the sandbox: %nanobanana sandbox, or Session.sandbox()."
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved once.

    Timeouts are per request and never infinite; ``deadline`` bounds a whole task.
    """

    api_key: SecretKey | None = None
    """The key, or ``None`` until one is needed (see :meth:`require_key`)."""
    key_source: str | None = None
    """Where the key came from (``argument``, an environment variable, ``.env``, ``colab``)."""
    base_url: str = DEFAULT_BASE_URL
    """The API origin, without a trailing slash."""
    model: str = DEFAULT_MODEL
    """The model used when a call names none."""
    connect_timeout: float = 5.0
    """Seconds to open a connection."""
    read_timeout: float = 15.0
    """Seconds to wait for a query or download answer."""
    submit_timeout: float = 30.0
    """Seconds to wait for the answer to a submit (longer: the server does work first)."""
    deadline: float = 600.0
    """Seconds after which a task still running is reported ``timed_out`` (resumable)."""
    max_download_bytes: int = 50 * 1024 * 1024
    """Largest image accepted from a URL or data URI, checked before decoding."""
    data_dir: Path | None = None
    """Where history and images are kept; ``None`` means the per-user default."""
    allow_local_urls: bool = False
    """Allow result URLs on loopback/private hosts and plain http (sandbox and tests).

    Explicit only (argument or ``NANOBANANA_ALLOW_LOCAL_URLS``; ``Session.sandbox()`` sets
    it): a loopback base URL does not imply it, since a local proxy in front of the real API
    says nothing about where result images may come from."""
    sandbox: bool = False
    """The backend is a sandbox (``NANOBANANA_SANDBOX``; ``Session.sandbox()`` sets it): its
    credits are pretend, and unless a data dir is given its history is kept in
    ``<data dir>/sandbox``, apart from the tasks a real key made."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _check_base_url(self.base_url))
        for name in ("connect_timeout", "read_timeout", "submit_timeout", "deadline"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if not self.model or not isinstance(self.model, str):
            raise ConfigurationError("model must be a non-empty string such as 'google/gempix2'")

    @classmethod
    def resolve(
        cls,
        *,
        api_key: str | SecretKey | None = None,
        base_url: str | None = None,
        model: str | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        deadline: float | None = None,
        read_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        dotenv: Path | None = None,
        colab: Callable[[str], str | None] = _colab_secret,
        **overrides: Any,
    ) -> Settings:
        """Build settings: explicit arguments, then environment, then ``.env``, then defaults.

        Args:
            environ: the environment to read the package's variables from (default
                ``os.environ``); tests pass a dict. The default data directory and a
                ``.env`` file's ``${VAR}`` come from the process environment (see
                :func:`default_data_dir` and :func:`read_dotenv`).
            dotenv: the ``.env`` file to read (default ``./.env``).
            colab: looks a secret up in Colab; returns ``None`` elsewhere.
            overrides: any other field of :class:`Settings`, by name.
        """
        env = os.environ if environ is None else environ
        file_values = read_dotenv(dotenv if dotenv is not None else Path.cwd() / ".env")

        def pick(name: str) -> str | None:
            value = env.get(name) or file_values.get(name)
            return value.strip() if value and value.strip() else None

        key, source = cls._find_key(api_key, env, file_values, colab)
        resolved_url = base_url or pick(ENV.BASE_URL) or DEFAULT_BASE_URL
        fields: dict[str, Any] = {
            "api_key": key,
            "key_source": source,
            "base_url": resolved_url,
            "model": model or pick(ENV.MODEL) or DEFAULT_MODEL,
            "allow_local_urls": env_flag(
                ENV.ALLOW_LOCAL_URLS, {ENV.ALLOW_LOCAL_URLS: pick(ENV.ALLOW_LOCAL_URLS) or ""}
            ),
        }
        sandbox = overrides.pop("sandbox", None)
        if sandbox is None:
            sandbox = env_flag(ENV.SANDBOX, {ENV.SANDBOX: pick(ENV.SANDBOX) or ""})
        fields["sandbox"] = bool(sandbox)
        if data_dir is not None:
            fields["data_dir"] = Path(data_dir).expanduser()
        elif sandbox:
            base = pick(ENV.DATA_DIR)
            fields["data_dir"] = (
                Path(base).expanduser() if base else default_data_dir()
            ) / "sandbox"
        elif (directory := pick(ENV.DATA_DIR)) is not None:
            fields["data_dir"] = Path(directory).expanduser()
        for field, arg, var in (
            ("deadline", deadline, ENV.DEADLINE),
            ("read_timeout", read_timeout, ENV.TIMEOUT),
        ):
            text = pick(var)
            if arg is not None:
                fields[field] = arg
            elif text is not None:
                try:
                    fields[field] = float(text)
                except ValueError:
                    raise ConfigurationError(f"{var}={text!r} is not a number of seconds") from None
        fields.update(overrides)
        return cls(**fields)

    @staticmethod
    def _find_key(
        given: str | SecretKey | None,
        env: Mapping[str, str],
        file_values: Mapping[str, str],
        colab: Callable[[str], str | None],
    ) -> tuple[SecretKey | None, str | None]:
        if isinstance(given, SecretKey):
            return given, "argument"
        if given is not None:
            return SecretKey(given), "argument"
        for name in (ENV.API_KEY, ENV.API_KEY_ALT):
            if env.get(name, "").strip():
                return SecretKey(env[name]), name
        for name in (ENV.API_KEY, ENV.API_KEY_ALT):
            if file_values.get(name, "").strip():
                try:
                    return SecretKey(file_values[name]), ".env"
                except ConfigurationError as error:  # its message never holds the value
                    raise ConfigurationError(
                        f"{name} in the .env file is not a usable API key: {error}; "
                        "put it on one line, without spaces or quotes inside"
                    ) from None
        for name in (ENV.API_KEY, ENV.API_KEY_ALT):
            value = colab(name)
            if value:
                return SecretKey(value), "colab"
        return None, None

    def require_key(self) -> SecretKey:
        """Return the key, or raise :class:`MissingAPIKeyError` saying where to put one."""
        if self.api_key is None:
            raise MissingAPIKeyError(MISSING_KEY_HELP)
        return self.api_key

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, str]:
        """The settings as text for people, with the key shown as a fingerprint only."""
        out: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "api_key":
                out[field.name] = (
                    "(none)" if value is None else f"set (fingerprint {value.fingerprint})"
                )
            else:
                out[field.name] = "(default)" if value is None else str(value)
        return out
