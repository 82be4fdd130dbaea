"""Client for AUTOMATIC1111's HTTP API (v1.10.1), as the worker uses it.

A1111 answers txt2img/img2img only when the images are done, so `generate` blocks for the whole
generation while another thread polls `progress` and may `interrupt` the same instance. Every failure
becomes one of the errors the worker acts on (docs/reliability.md has the table):
`errors.A1111Unavailable` (the instance could not do it now: try again later, elsewhere if possible),
`errors.A1111OutOfMemory` (a 500 naming an out-of-memory error: another instance may hold it),
`errors.A1111Failed` (a 500 naming another exception: A1111 crashed on this request and would again)
or `errors.A1111Rejected` (a 4xx: the request itself is wrong). Credentials never appear in names,
messages or logs. The HTTP libraries are imported at the first call, not with the module, which the
API imports too (its cold start needs neither).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import socket
import threading
import typing
import urllib.parse
import weakref

from chalicelib import config
from chalicelib import errors

if typing.TYPE_CHECKING:
    import requests

GENERATE_KINDS = ("txt2img", "img2img")

# A1111 v1.10.1 answers these with 500 although the request is at fault: an undecodable image, image
# URLs disabled or local, an unknown samples_format (its api.py raises HTTPException(500) for them).
_BAD_INPUT_500_DETAILS = frozenset({
    "Invalid encoded image", "Requests not allowed", "Request to local resource not allowed",
    "Invalid image url", "Invalid image format",
})
# 4xx statuses that mean "not now" rather than "never".
_RETRYABLE_4XX = frozenset({408, 429})
_MAX_DETAIL_CHARS = 500
# Statuses a proxy or a starting server answers: never the request's fault.
_GATEWAY_STATUSES = frozenset({502, 503, 504})
# What torch (CUDA, MPS, HIP) and Python say when memory runs out, in the exception's name or text.
_OUT_OF_MEMORY = re.compile(r"out ?of ?memory|MemoryError", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Instance:
    """One A1111 server; `url` may carry credentials, `name` never does. `capacity` is how many jobs
    it may run at once (A1111 itself runs one); only an instance with all the labels a job asks for
    (`instance_labels`) runs it."""

    url: str
    name: str
    capacity: int = 1
    labels: tuple[str, ...] = ()

    def has_labels(self, wanted: typing.Iterable[str]) -> bool:
        """Whether a job asking for `wanted` (its `instance_labels`) may run here."""
        return set(wanted) <= set(self.labels)


def parse_instances(value: str) -> list[Instance]:
    """`A1111_BASE_URL`: one or more base URLs separated by commas, each optionally followed by
    `;capacity=N` and `;labels=a+b` (e.g. `http://gpu1:7860;capacity=2;labels=sdxl+fast`)."""
    specs = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        url, *options = (piece.strip() for piece in item.split(";"))
        spec: dict = {"url": url}
        for option in filter(None, options):
            key, sep, text = option.partition("=")
            if not sep or key not in ("capacity", "labels"):
                raise ValueError(f"A1111_BASE_URL option {key!r} is unknown (use capacity=N or labels=a+b)")
            spec[key] = text.split("+") if key == "labels" else text
        specs.append(spec)
    return instances_from_specs(specs, source="A1111_BASE_URL")


def load_instances(base_url: str, *, instances_file: str = "") -> list[Instance]:
    """The instances of the settings: the JSON (or, when PyYAML is installed, YAML) file named by
    `A1111_INSTANCES` if set, else `A1111_BASE_URL`. The file holds a list of
    `{"url", "capacity"?, "labels"?}` objects (or `{"instances": [...]}`)."""
    if not instances_file:
        return parse_instances(base_url)
    with open(instances_file, encoding="utf-8") as handle:
        text = handle.read()
    if instances_file.endswith((".yaml", ".yml")):
        import yaml  # noqa: PLC0415 - optional: only a YAML file needs it
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("instances")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError("A1111_INSTANCES must hold a list of objects with a url (or {\"instances\": [...]})")
    return instances_from_specs(data, source="A1111_INSTANCES")


def instances_from_specs(specs: list[dict], *, source: str) -> list[Instance]:
    """Check and build instances from `{"url", "capacity", "labels"}` mappings."""
    instances: list[Instance] = []
    for spec in specs:
        unknown = set(spec) - {"url", "capacity", "labels"}
        if unknown:
            raise ValueError(f"{source}: unknown instance keys {sorted(unknown)}")
        url = str(spec.get("url") or "").strip().rstrip("/")
        name, _user, _password = _split_credentials(url)
        try:
            capacity = int(spec.get("capacity", 1))
        except (TypeError, ValueError):
            capacity = 0
        if capacity < 1:
            raise ValueError(f"{source}: capacity of {name} must be a whole number ≥ 1")
        labels = spec.get("labels") or []
        if isinstance(labels, str):
            labels = labels.split("+")
        labels = tuple(str(label).strip() for label in labels if str(label).strip())
        if any(instance.name == name for instance in instances):
            raise ValueError(f"{source} lists {name} twice")
        instances.append(Instance(url=url, name=name, capacity=capacity, labels=labels))
    if not instances:
        raise ValueError(f"{source} is empty: give at least one base URL, e.g. http://127.0.0.1:7860")
    return instances


def make_client(instance: Instance, settings: config.Settings, *, connect_timeout: float | None = None,
                timeout: float | None = None) -> "A1111Client":
    """The one way to build a client for `instance`: A1111_AUTH and the timeouts of the settings,
    unless the caller has a tighter budget of its own (a health probe, a catalog call)."""
    return A1111Client(instance.url, auth=settings.a1111_auth,
                       connect_timeout=settings.a1111_connect_timeout if connect_timeout is None else connect_timeout,
                       timeout=settings.a1111_timeout if timeout is None else timeout)


class A1111Client:
    """Calls one A1111 instance. Safe to share between threads: each thread gets its own session
    (connection pool), so `progress`/`interrupt` never wait behind a blocked `generate`."""

    def __init__(self, base_url: str, *, auth: str = "", connect_timeout: float = 5.0,
                 timeout: float = 600.0) -> None:
        self.name, user, password = _split_credentials(base_url.strip().rstrip("/"))
        if not (user or password) and auth:  # credentials in the URL are the more specific ones
            user, sep, password = auth.partition(":")
            if not sep:
                raise ValueError("A1111 auth must be given as user:pass")
        self._auth = (user, password) if (user or password) else None
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._local = threading.local()
        # Weak: a thread's session goes (its sockets closed) when the thread ends. Every job's progress
        # tracker is a new thread, so a strong list kept one session and socket per job forever.
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"A1111Client({self.name!r})"

    def generate(self, kind: str, payload: dict, *, timeout: float | None = None) -> dict:
        """POST a txt2img/img2img payload and wait for the images; returns A1111's JSON answer."""
        if kind not in GENERATE_KINDS:
            raise ValueError(f"kind must be one of {GENERATE_KINDS}, not {kind!r}")
        return self._call("POST", f"/sdapi/v1/{kind}", payload=payload,
                          timeout=self._timeout if timeout is None else timeout)

    def submit_generate(self, kind: str, payload: dict, *, timeout: float | None = None
                        ) -> concurrent.futures.Future:
        """`generate` on this thread's call thread: the caller can stop waiting for an A1111 that
        stalled (`abandon_calls`) while the call itself runs on until its timeout."""
        caller = getattr(self._local, "caller", None)
        if caller is None:
            caller = self._local.caller = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="a1111-call")
        return caller.submit(self.generate, kind, payload, timeout=timeout)

    def abandon_calls(self) -> None:
        """Give up this thread's call thread (a call stuck on a stalled A1111 keeps it until its
        timeout ends it); the next `submit_generate` starts a fresh one."""
        caller, self._local.caller = getattr(self._local, "caller", None), None
        if caller is not None:
            caller.shutdown(wait=False, cancel_futures=True)

    def progress(self, *, skip_current_image: bool = False, timeout: float = 5.0) -> dict:
        """A1111's progress of whatever it is generating now (its own job, not necessarily ours)."""
        return self._call("GET", "/sdapi/v1/progress", timeout=timeout,
                          params={"skip_current_image": "true" if skip_current_image else "false"})

    def interrupt(self, *, timeout: float = 5.0) -> None:
        """Ask A1111 to end the running generation; the blocked call returns the images made so far."""
        self._call("POST", "/sdapi/v1/interrupt", timeout=timeout, parse=False)

    def get_json(self, path: str, *, timeout: float) -> object:
        """GET a read-only endpoint (`/sdapi/v1/sd-models`, `samplers`, ...): its JSON, list or object."""
        return self._call("GET", path, timeout=timeout, any_json=True)

    def ping(self, *, timeout: float = 2.0) -> bool:
        """True if the API answers. Uses progress, as /internal/ping is missing in --nowebui mode."""
        try:
            self.progress(skip_current_image=True, timeout=timeout)
        except errors.A1111Error:
            return False
        return True

    def close(self) -> None:
        """Close every thread's connections."""
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions), weakref.WeakSet()
        for session in sessions:
            session.close()

    def _session(self) -> requests.Session:
        import requests  # noqa: PLC0415 - see the module docstring

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth  # sent pre-emptively: A1111's 401 has no WWW-Authenticate
            self._local.session = session
            with self._sessions_lock:
                self._sessions.add(session)
        return session

    def _call(self, method: str, path: str, *, timeout: float, payload: dict | None = None,
              params: dict | None = None, parse: bool = True, any_json: bool = False) -> object:
        """One request; the JSON object it answers (None when `parse` is false; any JSON value when
        `any_json`), or an A1111Error."""
        import requests  # noqa: PLC0415 - see the module docstring

        where = f"A1111 at {self.name}"
        request = f"{method} {path}"
        try:
            response = self._session().request(
                method, self.name + path, json=payload, params=params, allow_redirects=False,
                timeout=(min(self._connect_timeout, timeout), timeout))
        except requests.RequestException as exc:
            what = _describe_failure(exc, connect_timeout=min(self._connect_timeout, timeout),
                                     timeout=timeout)
            raise errors.A1111Unavailable(f"{where} {what} ({request})") from exc
        status = response.status_code
        if status >= 300:
            detail = _error_detail(response)
            error_class, exception = _classify(status, detail, _exception_of(response))
            if exception is not None:
                message = f"{exception} ({where}, {request})"
            else:
                message = f"{where} answered {status} to {request}: {_summarize(detail)}"
            raise error_class(message, status=status, detail=detail)
        if not parse:
            return None
        text = _text_of(response)
        del response  # the raw body goes before the parse builds the objects: peak 2× the answer, not 3×
        try:
            body = json.loads(text)
        except ValueError:
            raise errors.A1111Unavailable(f"{where} answered {status} to {request} with a body that is "
                                          f"not JSON", status=status) from None
        if not isinstance(body, dict) and not any_json:
            raise errors.A1111Unavailable(f"{where} answered {status} to {request} with JSON that is "
                                          f"not an object", status=status, detail=body)
        return body


def is_idle(progress: dict) -> bool:
    """Whether a `GET /sdapi/v1/progress` answer says A1111 runs no generation (`job_count` is 0
    when idle, -1 while a generation starts, the number of jobs while it runs)."""
    state = progress.get("state")
    return isinstance(state, dict) and state.get("job_count") == 0


def _text_of(response: requests.Response) -> str:
    """The body as text, decoded as `response.json()` decodes it: the declared charset, else JSON's
    own UTF-8/16/32 detection."""
    if response.encoding is None:
        response.encoding = json.detect_encoding(response.content)
    return response.text


def _split_credentials(url: str) -> tuple[str, str, str]:
    """(URL without user:pass@, user, password); ValueError naming the URL without credentials."""
    shown = re.sub(r"//[^/@]*@", "//***@", url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(f"A1111 URL {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"A1111 URL {shown!r} must look like http://host:port")
    if parts.query or parts.fragment:
        raise ValueError(f"A1111 URL {shown!r} must not have a query or fragment")
    netloc = parts.netloc.rpartition("@")[2]
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return (clean, urllib.parse.unquote(parts.username or ""),
            urllib.parse.unquote(parts.password or ""))


def _describe_failure(exc: requests.RequestException, *, connect_timeout: float, timeout: float) -> str:
    """Say what went wrong on the wire, without echoing URLs (which could carry credentials)."""
    import http.client  # noqa: PLC0415 - see the module docstring

    import requests  # noqa: PLC0415
    import urllib3  # noqa: PLC0415

    if isinstance(exc, requests.ConnectTimeout):
        return f"did not accept a connection within {connect_timeout:g} s"
    causes = _causes(exc)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "refused the connection"
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "could not be resolved"
    # Checked after those: urllib3's NewConnectionError is a subclass of its TimeoutError.
    if isinstance(exc, requests.Timeout) or any(
            isinstance(c, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for c in causes):
        return f"timed out after {timeout:g} s"
    if any(isinstance(c, (http.client.RemoteDisconnected, http.client.IncompleteRead,
                          urllib3.exceptions.ProtocolError)) for c in causes):
        return "closed the connection without a complete answer"
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return "reset the connection"
    return f"could not be reached ({type(exc).__name__})"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (requests and urllib3 nest them several deep)."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__,
                        *current.args])
    return found


def _classify(status: int, detail: object, exception: str | None) -> tuple[type[errors.A1111Error], str | None]:
    """(the error class of a failed answer, A1111's "Name: text" when it names an exception)."""
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return errors.A1111Rejected, None
    if status >= 500 and isinstance(detail, str) and detail in _BAD_INPUT_500_DETAILS:
        return errors.A1111Rejected, None
    if status in _GATEWAY_STATUSES or status < 500 or exception is None:
        return errors.A1111Unavailable, None
    if _OUT_OF_MEMORY.search(exception):
        return errors.A1111OutOfMemory, exception
    return errors.A1111Failed, exception


def _exception_of(response: requests.Response) -> str | None:
    """"Name: text" of the exception an A1111 500 names (`{"error": "TypeError", "errors": "..."}`);
    None for FastAPI's HTTPException (A1111's own refusals) or a body that names none."""
    try:
        body = response.json()
    except ValueError:
        return None
    name = body.get("error") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name.strip() or name == "HTTPException":
        return None
    text = body.get("errors") or body.get("detail") or ""
    text = text if isinstance(text, str) else repr(text)
    return _summarize(f"{name}: {text}" if text else name)


def _error_detail(response: requests.Response) -> object:
    """A1111's error detail: 422 list, HTTPException `detail`, other exceptions' `errors`, or text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:_MAX_DETAIL_CHARS] or response.reason
    if isinstance(body, dict):
        for key in ("detail", "errors"):
            if body.get(key) not in (None, "", [], {}):
                return body[key]
    return body


def _summarize(detail: object) -> str:
    """One line for a message: FastAPI's validation list as `field: msg; ...`."""
    if isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail):
        parts = []
        for item in detail:
            loc = [str(p) for p in item.get("loc") or [] if p != "body"]
            parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
        text = "; ".join(parts)
    else:
        text = detail if isinstance(detail, str) else repr(detail)
    return text if len(text) <= _MAX_DETAIL_CHARS else text[:_MAX_DETAIL_CHARS] + "…"
