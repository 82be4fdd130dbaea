"""Civitai's model-version-by-hash API: a client, and a process-wide pool that bounds the lookups.

Civitai is a nice-to-have beside A1111's lists, so it must never hold them up. After a 429, a 5xx, a
timeout or a refused connection, one `Cooldown` shared by every lookup of the process backs off
exponentially (1 s, 2 s, 4 s … 30 s, or `Retry-After`): a lookup that starts during a backoff fails
at once without calling Civitai, so answers are not slowed while Civitai is down or rate-limiting,
and a lookup already under way retries once after a short backoff. The pool runs lookups on at most
`concurrency` daemon threads, one lookup per hash at a time (a second request for a hash joins the
first), and batches SHA256 lookups into the bulk endpoint. Callers wait for the pool's futures only as
long as their time budget allows; a lookup that outlives the budget still finishes in the background
and hands its answer to `on_result` (the catalog stores it), so the next request has it.

The API key is sent as a bearer token and never appears in a message or a log line. `requests` is
imported on the first call, not with the module, to keep it out of the API's cold start.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import email.utils
import logging
import queue
import threading
import time
import typing
import urllib.parse

if typing.TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SHA256, AUTOV2, AUTOV3 = "SHA256", "AutoV2", "AutoV3"
HASH_LENGTHS = {SHA256: 64, AUTOV2: 10, AUTOV3: 12}
BULK_LIMIT = 100  # Civitai's bulk endpoint takes at most 100 SHA256 hashes per call
BULK_MIN = 3  # fewer SHA256 lookups than this go one by one
MAX_ATTEMPTS = 2
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
RETRY_WAIT_CAP = 5.0  # a lookup under way waits this long at most for its retry; beyond, it gives up
IDLE_SECONDS = 10.0  # a pool thread with nothing to do for this long ends
PUBLIC_SITE = "https://civitai.com"


class CivitaiUnavailable(Exception):
    """Civitai could not answer now (rate limited, 5xx, timeout, unreachable, key refused)."""


@dataclasses.dataclass(frozen=True)
class HashRef:
    """One hash to look up: its Civitai type and its lower-case hex value."""

    kind: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind.lower()}:{self.value}"


def hash_ref(kind: str, value: object) -> HashRef | None:
    """A HashRef if `value` is hex of the length Civitai records for `kind` (longer is cut), else None."""
    length = HASH_LENGTHS[kind]
    if not isinstance(value, str) or len(value) < length:
        return None
    value = value.strip().lower()[:length]
    return HashRef(kind, value) if all(c in "0123456789abcdef" for c in value) else None


class Cooldown:
    """Shared backoff: after a failure every caller waits base × 2^(failures−1) (or Retry-After)."""

    def __init__(self, *, clock: typing.Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._until = 0.0

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())

    def trip(self, *, retry_after: float | None = None) -> float:
        """Record a failure; the wait it imposes (seconds). Failures of calls made before the backoff
        began (concurrent lookups) count as one."""
        with self._lock:
            if self._clock() >= self._until or self._failures == 0:
                self._failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._failures - 1))
            if retry_after is not None:
                delay = min(BACKOFF_CAP, max(0.0, retry_after))
            self._until = max(self._until, self._clock() + delay)
            return delay

    def reset(self) -> None:
        with self._lock:
            self._failures = 0
            self._until = 0.0


class CivitaiClient:
    """Calls Civitai's `/model-versions/by-hash` endpoints. Thread-safe (a session per thread)."""

    def __init__(self, base_url: str, *, api_key: str = "", timeout: float = 10.0,
                 max_attempts: int = MAX_ATTEMPTS, cooldown: Cooldown | None = None,
                 sleep: typing.Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout
        self._max_attempts = max_attempts
        self.cooldown = cooldown or Cooldown()
        self._sleep = sleep
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"CivitaiClient({self.base_url!r})"

    def by_hash(self, ref: HashRef) -> dict | None:
        """The model version that has a file with this hash; None if Civitai has none."""
        response = self._request("GET", f"/model-versions/by-hash/{ref.value}")
        if response.status_code in (400, 404):  # 400: "Invalid hash", a hash Civitai cannot match
            return None
        body = _json(response)
        if not isinstance(body, dict):
            raise CivitaiUnavailable(f"Civitai answered {response.status_code} with JSON that is not an object")
        return body

    def by_sha256s(self, refs: typing.Sequence[HashRef]) -> dict[str, dict | None]:
        """Bulk lookup of up to BULK_LIMIT SHA256 hashes: {sha256: version or None}."""
        if not refs or len(refs) > BULK_LIMIT or any(ref.kind != SHA256 for ref in refs):
            raise ValueError(f"give 1 to {BULK_LIMIT} SHA256 hashes")
        response = self._request("POST", "/model-versions/by-hash", payload=[ref.value.upper() for ref in refs])
        if response.status_code == 404:
            return {ref.value: None for ref in refs}
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, list):
            raise CivitaiUnavailable(f"Civitai answered {response.status_code} to the bulk lookup")
        found: dict[str, dict | None] = {ref.value: None for ref in refs}
        for version in body:
            for sha256 in file_hashes(version, SHA256):
                if sha256 in found and found[sha256] is None:
                    found[sha256] = version
        return found

    def _request(self, method: str, path: str, *, payload: object = None) -> requests.Response:
        """200, 400 or 404 from Civitai; CivitaiUnavailable at once during a backoff, or after the
        attempts failed."""
        import requests  # noqa: PLC0415 - see the module docstring

        wait = self.cooldown.remaining()
        if wait:
            raise CivitaiUnavailable(f"Civitai is not asked for {wait:.1f} s more (backing off after errors)")
        problem = "no attempt was made"
        for attempt in range(self._max_attempts):
            wait = self.cooldown.remaining()
            if attempt and wait > RETRY_WAIT_CAP:
                break
            if wait:
                self._sleep(wait)
            try:
                response = self._session().request(method, self.base_url + path, json=payload,
                                                   headers=self._headers, timeout=self._timeout,
                                                   allow_redirects=False)
            except requests.RequestException as exc:
                problem = f"could not be reached ({type(exc).__name__})"
                self.cooldown.trip()
                continue
            status = response.status_code
            if status in (200, 400, 404):
                self.cooldown.reset()
                return response
            problem = f"answered {status}"
            if status == 429 or status >= 500:
                self.cooldown.trip(retry_after=_retry_after(response.headers.get("Retry-After")))
                continue
            break  # 401/403 (a refused key) and other 4xx: another attempt gets the same answer
        log.warning("Civitai lookup failed", extra={"civitai_problem": problem, "civitai_call": f"{method} {path}"})
        raise CivitaiUnavailable(f"Civitai {problem}")

    def _session(self) -> requests.Session:
        import requests  # noqa: PLC0415 - see the module docstring

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


class LookupPool:
    """Runs lookups on at most `concurrency` threads; concurrent lookups of one hash share one call."""

    def __init__(self, client: CivitaiClient, *, concurrency: int) -> None:
        self.client = client
        self._concurrency = concurrency
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._inflight: dict[str, concurrent.futures.Future] = {}

    def submit(self, refs: typing.Iterable[HashRef], *,
               on_result: typing.Callable[[HashRef, dict | None], typing.Any]) -> dict[str, concurrent.futures.Future]:
        """A future per ref (by `ref.key`) resolving to `on_result(ref, version or None)`, or failing
        with CivitaiUnavailable. `on_result` runs on the pool's thread as soon as Civitai answers."""
        futures: dict[str, concurrent.futures.Future] = {}
        new: list[HashRef] = []
        with self._lock:
            for ref in dict.fromkeys(refs):
                future = self._inflight.get(ref.key)
                if future is None:
                    future = self._inflight[ref.key] = concurrent.futures.Future()
                    new.append(ref)
                futures[ref.key] = future
        sha256s = [ref for ref in new if ref.kind == SHA256]
        singles = [ref for ref in new if ref.kind != SHA256]
        if len(sha256s) < BULK_MIN:
            singles, sha256s = sha256s + singles, []
        for start in range(0, len(sha256s), BULK_LIMIT):
            self._enqueue(sha256s[start:start + BULK_LIMIT], on_result, bulk=True)
        for ref in singles:
            self._enqueue([ref], on_result, bulk=False)
        return futures

    def _enqueue(self, refs: list[HashRef], on_result, *, bulk: bool) -> None:
        with self._lock:
            self._jobs.put((refs, on_result, bulk))
            if self._jobs.qsize() > self._idle and self._threads < self._concurrency:
                self._threads += 1
                threading.Thread(target=self._work, name="civitai-lookup", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                job = None
            with self._lock:
                self._idle -= 1
                if job is None:
                    if self._jobs.empty():
                        self._threads -= 1
                        return
                    continue
            self._run(*job)

    def _run(self, refs: list[HashRef], on_result, bulk: bool) -> None:
        try:
            if bulk:
                answers = self.client.by_sha256s(refs)
            else:
                answers = {refs[0].value: self.client.by_hash(refs[0])}
        except Exception as exc:  # noqa: BLE001 - every failure reaches the waiting futures
            error = exc if isinstance(exc, CivitaiUnavailable) else CivitaiUnavailable(f"lookup failed: {exc!r}")
            for ref in refs:
                self._settle(ref, error=error)
            return
        for ref in refs:
            try:
                value = on_result(ref, answers.get(ref.value))
            except Exception as exc:  # noqa: BLE001
                log.exception("storing a Civitai answer failed")
                self._settle(ref, error=CivitaiUnavailable(f"storing the answer failed: {exc!r}"))
            else:
                self._settle(ref, value=value)

    def _settle(self, ref: HashRef, *, value: typing.Any = None, error: Exception | None = None) -> None:
        with self._lock:
            future = self._inflight.pop(ref.key, None)
        if future is None:
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


_pools: dict[tuple, LookupPool] = {}
_pools_lock = threading.Lock()


def shared_pool(base_url: str, *, api_key: str, timeout: float, concurrency: int) -> LookupPool:
    """The process's pool for this configuration, so the bound on lookups holds across requests."""
    key = (base_url.rstrip("/"), api_key, timeout, concurrency)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = LookupPool(CivitaiClient(base_url, api_key=api_key, timeout=timeout),
                                            concurrency=concurrency)
        return pool


def summarize(version: dict, *, site_url: str) -> dict:
    """What clients choosing a model want from a Civitai model version (tolerant of missing fields)."""
    model = version.get("model") if isinstance(version.get("model"), dict) else {}
    model_id, version_id = _int(version.get("modelId")), _int(version.get("id"))
    files = [f for f in version.get("files") or [] if isinstance(f, dict)]
    primary = next((f for f in files if f.get("primary")), files[0] if files else {})
    words = version.get("trainedWords")
    return {
        "model_id": model_id,
        "model_name": _str(model.get("name")),
        "version_id": version_id,
        "version_name": _str(version.get("name")),
        "type": _str(model.get("type")),
        "base_model": _str(version.get("baseModel")),
        "trained_words": [w for w in words if isinstance(w, str)] if isinstance(words, list) else [],
        "nsfw": model.get("nsfw") if isinstance(model.get("nsfw"), bool) else None,
        "nsfw_level": _int(version.get("nsfwLevel")),
        "air": _str(version.get("air")),
        "page_url": (f"{site_url}/models/{model_id}" + (f"?modelVersionId={version_id}" if version_id else "")
                     if model_id is not None else None),
        "download_url": _str(version.get("downloadUrl")) or _str(primary.get("downloadUrl")),
        "preview_images": [
            {"url": image["url"], "nsfw_level": _int(image.get("nsfwLevel")), "width": _int(image.get("width")),
             "height": _int(image.get("height")), "type": _str(image.get("type"))}
            for image in version.get("images") or [] if isinstance(image, dict) and _str(image.get("url"))],
    }


def site_url(base_url: str) -> str:
    """The site whose pages the API describes: `https://civitai.com` for `https://civitai.com/api/v1`."""
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    if parts.path.endswith("/api/v1") and parts.scheme in ("http", "https") and parts.netloc:
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path[:-len("/api/v1")], "", ""))
    return PUBLIC_SITE


def file_hashes(version: object, kind: str) -> list[str]:
    """The lower-case `kind` hashes of a version's files."""
    if not isinstance(version, dict):
        return []
    found = []
    for file in version.get("files") or []:
        hashes = file.get("hashes") if isinstance(file, dict) else None
        if isinstance(hashes, dict) and isinstance(hashes.get(kind), str):
            found.append(hashes[kind].lower())
    return found


def _json(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        raise CivitaiUnavailable(f"Civitai answered {response.status_code} with a body that is not JSON") from None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
