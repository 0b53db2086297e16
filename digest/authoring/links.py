"""`digest links`: check every external link of the content, concurrently and politely.

Links are read from the YAML as written, so each is reported at its file and line:
notes' ``sources[].url``, Markdown links, images and autolinks in bodies (not those
inside code), and people's ``url``. Each distinct URL is fetched once: HEAD, then GET
when HEAD fails; redirects are followed and reported as moved; each host gets at most
``per_host`` requests at a time, started ``delay`` seconds apart. Good results are
cached in ``.cache/links.json`` for ``max_age`` hours; broken ones are always rechecked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from digest.authoring.metadata import USER_AGENT
from digest.content.load import load
from digest.content.yamlread import Map, Scalar, Seq
from digest.diagnostics import Diagnostic
from digest.errors import UsageError
from digest.files import write_atomic
from digest.templates import environment

CACHE_FILE = Path(".cache") / "links.json"
CACHE_VERSION = 1
URL = r"https?://(?:[^\s()<>\"'`]|\([^\s()<>]*\))+"
MARKDOWN_LINK_RE = re.compile(r"!?\[[^\]]*\]\(\s*<?(" + URL + r")>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
AUTOLINK_RE = re.compile(r"<(https?://[^\s<>]+)>")
REFERENCE_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(" + URL + r")>?", re.MULTILINE)
HTML_ATTR_RE = re.compile(r"""\b(?:href|src)\s*=\s*["'](https?://[^"']+)["']""")
FENCE_RE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN_RE = re.compile(r"(`+)(?:(?!\1).)+?\1")


@dataclass(frozen=True)
class Link:
    url: str
    path: str  # as shown: relative to the project root
    line: int


@dataclass(frozen=True)
class Result:
    url: str
    status: int | None  # final HTTP status; None when no answer came
    final: str | None = None  # where redirects ended; None when not redirected
    redirect: int | None = None  # status of the first redirect
    error: str = ""  # "timeout" or why the connection failed
    checked: str = ""  # ISO time of the check
    cached: bool = False

    @property
    def rate_limited(self) -> bool:
        return self.status == 429

    @property
    def broken(self) -> bool:
        return bool(self.error) or (self.status is not None and self.status >= 400 and not self.rate_limited)

    @property
    def moved(self) -> bool:
        return self.final is not None and not self.broken and not self.rate_limited

    def shown(self) -> str:
        """``404 url``, ``timeout url``, ``301 url -> final``: the status, then the link."""
        if self.error:
            return f"{'timeout' if self.error == 'timeout' else 'error'} {self.url}" + (
                "" if self.error == "timeout" else f" ({self.error})")
        if self.rate_limited:
            return f"429 {self.url} (rate limited; checked again next run)"
        if self.moved:
            return f"{self.redirect} {self.url} -> {self.final}"
        return f"{self.status} {self.url}"


# --- finding links -----------------------------------------------------------------------------


def body_urls(body: str) -> list[str]:
    """External links of a Markdown body in order, leaving out code blocks and code spans."""
    kept, fence = [], None
    for line in body.split("\n"):
        opened = FENCE_RE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            kept.append("")
        elif opened:
            fence = opened.group(1)
            kept.append("")
        elif line.startswith(("    ", "\t")) and (not kept or not kept[-1].strip()):
            kept.append("")  # indented code block
        else:
            kept.append(CODE_SPAN_RE.sub(lambda m: " " * len(m.group(0)), line))
    text = "\n".join(kept)
    found = [(m.start(1), m.group(1)) for rx in (MARKDOWN_LINK_RE, AUTOLINK_RE, REFERENCE_RE, HTML_ATTR_RE)
             for m in rx.finditer(text)]
    return [url for _, url in sorted(found)]


def _lines_from(text: str, start: int, url: str) -> list[int]:
    """Line numbers (1-based, from ``start``) of each occurrence of ``url`` in ``text``."""
    lines = text.split("\n")
    return [n + 1 for n in range(start - 1, len(lines)) for _ in range(lines[n].count(url))]


def _note_links(path: str, text: str, root: Map) -> list[Link]:
    links = []
    sources = root.entries.get("sources", (None, None))[1]
    if isinstance(sources, Seq):
        for item in sources.items:
            url = item.entries.get("url", (None, None))[1] if isinstance(item, Map) else None
            if isinstance(url, Scalar) and url.value.startswith(("http://", "https://")):
                links.append(Link(url.value.strip(), path, url.line))
    body = root.entries.get("body", (None, None))[1]
    if isinstance(body, Scalar):
        seen: dict[str, int] = defaultdict(int)
        for url in body_urls(body.value):
            lines = _lines_from(text, body.line, url)
            links.append(Link(url, path, lines[seen[url]] if seen[url] < len(lines) else body.line))
            seen[url] += 1
    return links


def _people_links(path: str, root: Map) -> list[Link]:
    links = []
    for _, person in root.entries.values():
        url = person.entries.get("url", (None, None))[1] if isinstance(person, Map) else None
        if isinstance(url, Scalar) and url.value.startswith(("http://", "https://")):
            links.append(Link(url.value.strip(), path, url.line))
    return links


def collect(content_root: Path) -> list[Link]:
    """Every external link of the content, in file order; unreadable files are left to `digest check`."""
    raw = load(content_root)
    links = []
    for source in raw.notes:
        if isinstance(source.node, Map):
            links += _note_links(source.path, source.text or "", source.node)
    if raw.people is not None and isinstance(raw.people.node, Map):
        links += _people_links(raw.people.path, raw.people.node)
    return links


# --- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Politeness:
    per_host: int = 2  # requests in flight to one host
    delay: float = 1.0  # seconds between starts of requests to one host
    timeout: float = 15.0  # seconds for one request
    concurrency: int = 16  # requests in flight in all

    def __post_init__(self):
        if self.per_host < 1 or self.concurrency < 1:
            raise UsageError("--per-host and --concurrency must be at least 1")
        if self.delay < 0 or self.timeout <= 0:
            raise UsageError("--delay must be 0 or more seconds and --timeout more than 0")


class _Hosts:
    """Per-host semaphores and start times, so no host sees more than we promise."""

    def __init__(self, politeness: Politeness):
        self.politeness = politeness
        self.slots: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(politeness.per_host))
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.next_start: dict[str, float] = defaultdict(float)

    async def wait_turn(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        async with self.locks[host]:
            now = loop.time()
            start = max(now, self.next_start[host])
            self.next_start[host] = start + self.politeness.delay
        if start > now:
            await asyncio.sleep(start - now)


async def _request(client: httpx.AsyncClient, hosts: _Hosts, method: str, url: str) -> httpx.Response:
    host = urlsplit(url).hostname or url
    async with hosts.slots[host]:
        await hosts.wait_turn(host)
        async with client.stream(method, url) as response:
            return response  # the body is never read: the status is all we need


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _result(url: str, response: httpx.Response) -> Result:
    history = response.history
    final = str(response.url) if history else None
    return Result(url, response.status_code, final, history[0].status_code if history else None, checked=_now())


async def check_one(client: httpx.AsyncClient, hosts: _Hosts, url: str) -> Result:
    """HEAD, then GET if HEAD failed (many servers refuse HEAD); redirects followed."""
    try:
        response = await _request(client, hosts, "HEAD", url)
        if response.status_code < 400 or response.status_code == 429:
            return _result(url, response)
    except httpx.TimeoutException:
        return Result(url, None, error="timeout", checked=_now())
    except httpx.RequestError:
        pass  # some servers drop HEAD; GET decides
    try:
        return _result(url, await _request(client, hosts, "GET", url))
    except httpx.TimeoutException:
        return Result(url, None, error="timeout", checked=_now())
    except httpx.TooManyRedirects:
        return Result(url, None, error="redirect loop", checked=_now())
    except httpx.RequestError as exc:
        return Result(url, None, error=_reason(exc), checked=_now())


def _reason(exc: httpx.RequestError) -> str:
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text[:120] or type(exc).__name__


async def check_all(urls: list[str], politeness: Politeness) -> dict[str, Result]:
    hosts = _Hosts(politeness)
    limits = httpx.Limits(max_connections=politeness.concurrency, max_keepalive_connections=politeness.concurrency)
    timeout = httpx.Timeout(politeness.timeout)
    async with httpx.AsyncClient(follow_redirects=True, timeout=timeout, limits=limits,
                                 headers={"User-Agent": USER_AGENT.replace("digest new", "digest links")}) as client:
        results = await asyncio.gather(*(check_one(client, hosts, url) for url in urls))
    return dict(zip(urls, results, strict=True))


# --- cache -------------------------------------------------------------------------------------


def load_cache(path: Path, max_age_hours: float, warn) -> dict[str, Result]:
    """Fresh good results from ``path``; a missing, old or unreadable cache is simply not used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warn(f"ignoring unreadable link cache {path} ({exc})")
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("links"), dict):
        warn(f"ignoring link cache {path} written by another version")
        return {}
    oldest = dt.datetime.now(dt.UTC) - dt.timedelta(hours=max_age_hours)
    fresh = {}
    for url, entry in data["links"].items():
        try:
            result = Result(**{**entry, "url": url, "cached": True})
            if dt.datetime.fromisoformat(result.checked) >= oldest and not result.broken:
                fresh[url] = result
        except (TypeError, ValueError):
            continue
    return fresh


def save_cache(path: Path, results: dict[str, Result]) -> None:
    """Keep good and moved results (broken and rate-limited ones are checked again next time)."""
    kept = {url: {k: v for k, v in asdict(r).items() if k not in ("url", "cached")}
            for url, r in sorted(results.items()) if not r.broken and not r.rate_limited}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"version": CACHE_VERSION, "links": kept}, indent=1) + "\n")


# --- the command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    links: list[Link]
    results: dict[str, Result]

    def problems(self) -> list[tuple[Link, Result]]:
        """Broken, moved and rate-limited links, by file and line."""
        shown = [(link, self.results[link.url]) for link in self.links]
        return sorted(((link, r) for link, r in shown if r.broken or r.moved or r.rate_limited),
                      key=lambda pair: (pair[0].path, pair[0].line, pair[0].url))

    def count(self, what: str) -> int:
        return sum(1 for r in self.results.values() if getattr(r, what))

    def lines(self, github: bool = False) -> list[str]:
        out = [f"{link.path}:{link.line}: {result.shown()}" for link, result in self.problems()]
        if github:
            out += [Diagnostic(link.path, link.line, 1, "error" if result.broken else "warning",
                               result.shown()).github().replace("title=digest check", "title=digest links")
                    for link, result in self.problems()]
        out.append(self.summary())
        return out

    def summary(self) -> str:
        files = len({link.path for link in self.links})
        cached = sum(1 for r in self.results.values() if r.cached)
        limited = self.count("rate_limited")
        return (f"digest links {'failed' if self.count('broken') else 'ok'}: {len(self.results)} link(s) in "
                f"{files} file(s), {self.count('broken')} broken, {self.count('moved')} moved"
                + (f", {limited} rate-limited" if limited else "") + f" ({cached} from cache)")

    def markdown(self) -> str:
        return environment().get_template("links_report.md.j2").render(report=self, problems=self.problems())


def _run_async(coroutine):
    """``asyncio.run``, also from a thread whose event loop is already running (a notebook, a test
    session holding Playwright's sync API): then the checks get a thread and a loop of their own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run(content_root: Path, politeness: Politeness, cache: Path | None, max_age_hours: float, warn) -> Report:
    """Collect, check (using and refreshing the cache), and report."""
    links = collect(content_root)
    urls = list(dict.fromkeys(link.url for link in links))
    known = load_cache(cache, max_age_hours, warn) if cache else {}
    todo = [url for url in urls if url not in known]
    started = time.perf_counter()
    checked = _run_async(check_all(todo, politeness)) if todo else {}
    if todo:
        warn(f"checked {len(todo)} link(s) in {time.perf_counter() - started:.1f}s")
    results = {url: known.get(url) or checked[url] for url in urls}
    if cache:
        save_cache(cache, results)
    return Report(links, results)
