"""Metadata of a paper or a web page, fetched for `digest new --arxiv/--url`.

arXiv ids go to arXiv's Atom API (``$DIGEST_ARXIV_API``, default
https://export.arxiv.org/api/query); web pages are read for ``<title>``, Open
Graph and Highwire ``citation_*`` tags. Every failure is a FetchError whose one
line says what happened and what to do. Nothing here writes a file.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx

from digest.content.model import ARXIV_RE
from digest.errors import FetchError, RateLimited, UsageError

ARXIV_API = "https://export.arxiv.org/api/query"
ARXIV_API_ENV = "DIGEST_ARXIV_API"
TIMEOUT_ENV = "DIGEST_HTTP_TIMEOUT"
DEFAULT_TIMEOUT = 15.0
MAX_ATTEMPTS = 3
MAX_WAIT = 30.0  # seconds we wait for a Retry-After; longer and the user is told when to retry
MAX_BYTES = 4 * 1024 * 1024
USER_AGENT = "digest/0.1 (ML reading notes; digest new)"
ATOM = "{http://www.w3.org/2005/Atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
ARXIV_URL_RE = re.compile(r"^(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/(?P<id>.+?)(?:\.pdf)?/?$")


@dataclass(frozen=True)
class Metadata:
    """What a note's `sources` entry and `people` need from a paper or page."""

    url: str
    title: str
    authors: tuple[str, ...] = ()
    date: dt.date | None = None
    arxiv: str | None = None


def parse_arxiv_id(text: str) -> str:
    """``1606.04080``, ``arXiv:1606.04080v2`` or an arxiv.org/abs/ link → the bare id."""
    value = text.strip()
    if match := ARXIV_URL_RE.match(value):
        value = match["id"]
    value = re.sub(r"^arxiv:", "", value, flags=re.IGNORECASE)
    if not ARXIV_RE.fullmatch(value):
        raise UsageError(f"'{text}' is not an arXiv id; write it like 1606.04080 or hep-th/9901001")
    return value


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}='{raw}' is not a number of seconds") from None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait: Retry-After as seconds or as an HTTP date."""
    raw = response.headers.get("retry-after", "").strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _rate_limited(host: str, response: httpx.Response, wait: float | None) -> RateLimited:
    status = response.status_code
    if wait is None:
        return RateLimited(f"{host} is busy (HTTP {status}) and did not say for how long; "
                           "try again in a few minutes")
    at = (dt.datetime.now().astimezone() + dt.timedelta(seconds=wait)).strftime("%H:%M")
    return RateLimited(f"{host} is busy (HTTP {status}) and asks to wait {wait:.0f} s; "
                       f"try again after {at}", retry_after=wait)


def _read(response: httpx.Response, url: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BYTES:
            raise FetchError(f"{url} is larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                             "give its title with --source and --title instead")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(url: str, params: dict | None = None) -> tuple[httpx.Response, bytes]:
    """GET ``url`` following redirects; waits out short Retry-After answers, a bounded number of times."""
    host = urlsplit(url).netloc or url
    timeout = _timeout()
    with httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT}) as client:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with client.stream("GET", url, params=params) as response:
                    if response.status_code in (429, 503):
                        wait = _retry_after(response)
                        if wait is None or wait > MAX_WAIT or attempt == MAX_ATTEMPTS:
                            raise _rate_limited(host, response, wait)
                        print(f"{host} asks to wait {wait:.0f} s (HTTP {response.status_code}); "
                              f"retrying ({attempt}/{MAX_ATTEMPTS - 1})", file=sys.stderr, flush=True)
                        time.sleep(wait)
                        continue
                    if response.status_code >= 400:
                        raise _status_error(response)
                    return response, _read(response, url)
            except httpx.TimeoutException:
                raise FetchError(f"{host} did not answer within {timeout:g} s; try again later "
                                 f"(or set {TIMEOUT_ENV} to wait longer)") from None
            except httpx.TooManyRedirects:
                raise FetchError(f"{url} redirects in a loop; open it in a browser to find the real "
                                 "address") from None
            except httpx.RequestError as exc:  # connection refused, DNS, TLS, protocol, decoding
                raise FetchError(f"cannot reach {host} ({_reason(exc)}); check your network connection "
                                 "and try again") from None
            except httpx.InvalidURL as exc:
                raise UsageError(f"'{url}' is not a usable address: {exc}") from None
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _status_error(response: httpx.Response) -> FetchError:
    url, status = str(response.url), response.status_code
    if status == 404:
        return FetchError(f"{url} was not found (HTTP 404); check the address")
    if status in (401, 403):
        return FetchError(f"{url} refused access (HTTP {status}); use --source with --title instead")
    return FetchError(f"{url} answered HTTP {status} {response.reason_phrase}; try again later")


def _reason(exc: httpx.RequestError) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\]\s*", "", text.splitlines()[0])[:160]


# --- arXiv -------------------------------------------------------------------------------------


def fetch_arxiv(arxiv_id: str) -> Metadata:
    """Title, authors and first-version date of an arXiv paper, from the Atom API."""
    api = os.environ.get(ARXIV_API_ENV) or ARXIV_API
    response, body = fetch(api, params={"id_list": arxiv_id, "max_results": "1"})
    return parse_atom(body, arxiv_id)


def _text(element: ET.Element | None) -> str:
    return " ".join((element.text or "").split()) if element is not None else ""


def parse_atom(body: bytes, arxiv_id: str) -> Metadata:
    """Read arXiv's Atom answer for one id; a wrong or empty answer is a FetchError."""
    if b"<!DOCTYPE" in body[:4096] or b"<!ENTITY" in body[:4096]:
        raise FetchError("arXiv sent XML with a DOCTYPE, which its API never does; try again later")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise FetchError(f"arXiv sent a response that is not valid XML ({exc}); try again later") from None
    if root.tag != f"{ATOM}feed":
        raise FetchError(f"arXiv sent XML that is not an Atom feed (<{root.tag}>); "
                         f"is {ARXIV_API_ENV} pointing at the API?")
    entry = root.find(f"{ATOM}entry")
    total = _text(root.find(f"{OPENSEARCH}totalResults"))
    if entry is None or total == "0":
        raise FetchError(f"arXiv has no paper {arxiv_id}; check the id at https://arxiv.org/abs/{arxiv_id}")
    entry_id = _text(entry.find(f"{ATOM}id"))
    if "/api/errors" in entry_id:
        raise FetchError(f"arXiv refused {arxiv_id}: {_text(entry.find(f'{ATOM}summary')) or 'no reason given'}")
    title = _text(entry.find(f"{ATOM}title"))
    if not title:
        raise FetchError(f"arXiv has no paper {arxiv_id}; check the id at https://arxiv.org/abs/{arxiv_id}")
    base = re.sub(r"v\d+$", "", arxiv_id)
    if base not in entry_id:
        raise FetchError(f"arXiv answered with {entry_id or 'an entry without id'} for {arxiv_id}; "
                         "try again later")
    authors = tuple(name for a in entry.findall(f"{ATOM}author") if (name := _text(a.find(f"{ATOM}name"))))
    return Metadata(url=f"https://arxiv.org/abs/{arxiv_id}", title=title, authors=authors,
                    date=_date(_text(entry.find(f"{ATOM}published"))), arxiv=arxiv_id)


def _date(text: str) -> dt.date | None:
    """The date at the start of an ISO or slash-separated timestamp, if any."""
    match = re.match(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})", text.strip())
    if not match:
        return None
    try:
        return dt.date(*map(int, match.groups()))
    except ValueError:
        return None


# --- web pages ---------------------------------------------------------------------------------


def fetch_page(url: str) -> Metadata:
    """Title, authors and date of a web page from its <title>, Open Graph and citation tags."""
    response, body = fetch(url)
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in ("text/html", "application/xhtml+xml"):
        raise FetchError(f"{url} is {kind}, not a web page; use --source {url} with --title instead")
    final = str(response.url)
    if final != url:
        print(f"{url} redirected to {final}; the note links to the latter", file=sys.stderr)
    return parse_html(_decode(body, response.charset_encoding), final)


def _decode(body: bytes, header_charset: str | None) -> str:
    """Text of an HTML page: the HTTP charset, else <meta charset>, else UTF-8 (EUC-KR pages exist)."""
    charset = header_charset
    if not charset:
        found = re.search(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", body[:4096], re.IGNORECASE)
        charset = found.group(1).decode("ascii") if found else "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


class _MetaParser(HTMLParser):
    """Collects <title> and <meta> name/property → contents (several for citation_author)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, list[str]] = {}
        self.title: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = {k.lower(): (v or "") for k, v in attrs}
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "meta":
            key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
            if key and attrs.get("content", "").strip():
                self.meta.setdefault(key, []).append(" ".join(attrs["content"].split()))

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)


def _first_last(name: str) -> str:
    """Highwire tags often write 'Vinyals, Oriol'; people.yml writes 'Oriol Vinyals'."""
    parts = [part.strip() for part in name.split(",")]
    return f"{parts[1]} {parts[0]}" if len(parts) == 2 and all(parts) else name.strip()


def parse_html(html: str, url: str) -> Metadata:
    parser = _MetaParser()
    parser.feed(html)
    parser.close()

    def first(*keys: str) -> str:
        return next((parser.meta[k][0] for k in keys if k in parser.meta), "")

    title = first("citation_title", "og:title", "twitter:title") or " ".join("".join(parser.title).split())
    if not title:
        raise FetchError(f"{url} has no <title> or og:title; give one with --source and --title")
    authors = [_first_last(name) for name in parser.meta.get("citation_author", [])] or [
        name.strip() for name in re.split(r",| and ", first("author", "article:author")) if name.strip()
    ]
    authors = [a for a in authors if not a.startswith(("http://", "https://"))]
    date = _date(first("citation_publication_date", "citation_date", "article:published_time",
                       "og:published_time", "date", "dc.date"))
    return Metadata(url=url, title=title, authors=tuple(dict.fromkeys(authors)), date=date)
