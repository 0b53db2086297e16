"""The only MkDocs-specific module: hooks that feed ``render_site`` pages to MkDocs.

``mkdocs.yml`` names this file under ``hooks:``, so ``mkdocs build`` and
``mkdocs serve`` both work, and a note edit live-reloads. Replacing MkDocs
(Zensical, ProperDocs) means replacing this file alone.

MkDocs runs this file anew for every build, so per-build state lives in module
globals here, and what should outlive a rebuild under ``mkdocs serve`` (Kiwi,
its memo) lives in ``digest.site.search``.

MkDocs renders pages one by one in one process. A `mkdocs build` of many notes
hands the generated pages outside the navigation to forked workers instead (one
per core, ``DIGEST_BUILD_WORKERS`` to choose): each worker reads, renders and
writes its share with MkDocs's own page functions, then reports its log records,
which the parent logs again, so `--strict` counts them, and its anchor links into
other processes' pages, which the parent checks. The parent writes the sitemap
once every worker is done, so it lists every page. Pages rendered elsewhere stay
findable for links (``_SiteFiles``).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePath

from mkdocs.commands import build as mkdocs_build_module
from mkdocs.exceptions import Abort, PluginError
from mkdocs.structure.files import File, Files

from digest.content import load
from digest.errors import ContentInvalid, DigestError
from digest.pipeline.check import load_content
from digest.pipeline.publish import site_extras
from digest.site import sanitize, search
from digest.site.records import SiteConfig
from digest.site.render import PageMemo, render_site

CONTENT_DIR = "content"
CONTENT_ENV = "DIGEST_CONTENT"  # another content folder (benchmarks, tests): same site, other notes
CACHE_DIR = ".cache/search"  # beside the content folder, gitignored

log = logging.getLogger("mkdocs.plugins.digest")
SERVICE_ENV = "DIGEST_SERVICE_URL"  # where the site's subscribe form posts (`digest serve`)
LOCAL_SERVICE = "http://127.0.0.1:8470/"  # unset: the loopback `digest serve` a newcomer can start
WORKERS_ENV = "DIGEST_BUILD_WORKERS"  # processes that render pages; 1 = all in MkDocs's own loop
MIN_SHARE = 200  # pages below which a worker costs more (fork, env) than it saves

_generated_pages: dict = {}  # docs path → digest.site.render.Page, for the pages made from content/ in this build
_workers: list = []  # the forked workers of this build: (pid, report path)
_elsewhere: list = []  # generated files MkDocs's loop does not see: a worker's, or unchanged under serve
_build_state: dict = {}  # every page, nav, theme env: for the sitemap written at the end


def on_startup(command, dirty):
    """Under `mkdocs serve`, Kiwi stays loaded between rebuilds (this file is re-run for each rebuild;
    digest.site.search is not, so the flag lives there)."""
    _served.active = command == "serve"
    search.keep_analyzer = _served.active
    load.remember_parses(_served.active)


class SiteBuildError(DigestError):
    """Raised when MkDocs refuses to build (content errors, broken config, strict warnings)."""


def _project_root(config) -> Path:
    return Path(config.config_file_path).parent


def _content_root(config) -> Path:
    if _given:
        return _given["root"]
    other = os.environ.get(CONTENT_ENV)
    return Path(other).resolve() if other else _project_root(config) / CONTENT_DIR


def on_files(files, config):
    """Add every generated page, asset and file as a virtual file; content errors stop the build."""
    started = time.perf_counter()
    try:
        content, refs = _given["loaded"] if _given else load_content(_content_root(config))
        extras = site_extras(content, config.site_url or "", _service_url(config.extra or {}))
        site = render_site(content, refs, _site_config(config), extras, memo=_served.memo if _served.active else None)
    except ContentInvalid as exc:
        lines = "\n".join(d.format() for d in exc.diagnostics if d.severity == "error")
        raise PluginError(f"content has errors:\n{lines}") from None
    except DigestError as exc:
        raise PluginError(str(exc)) from None
    log.info(f"digest: {len(content.published)} notes → {len(site.pages)} pages and {len(site.files)} files "
             f"in {time.perf_counter() - started:.1f} s")
    _generated_pages.clear()
    for page in site.pages:
        _refuse_existing(files, page.path)
        files.append(File.generated(config, page.path, content=page.text))
        _generated_pages[page.path] = page
    for asset in site.assets:
        _refuse_existing(files, asset.path)
        files.append(File.generated(config, asset.path, abs_src_path=str(asset.source)))
    for file in site.files:
        _refuse_existing(files, file.path)
        files.append(File.generated(config, file.path, content=file.text))
    return _SiteFiles(files)


class _SiteFiles(Files):
    """MkDocs's files, less those it must not render here (a worker's share; under serve, what is
    unchanged), which links must still find: a note may link to any other note or figure."""

    def __init__(self, files):
        super().__init__(files)
        self.aside: dict[str, File] = {}

    def set_aside(self, file: File) -> None:
        self.remove(file)
        self.aside[file.src_uri] = file

    def get_file_from_path(self, path: str) -> File | None:
        return super().get_file_from_path(path) or self.aside.get(PurePath(path).as_posix())


def on_pre_build(config):
    _workers.clear()
    _elsewhere.clear()
    _build_state.clear()
    if _served.active:
        _served.stash(config.site_dir)
        gc.disable()  # the server's heap (kept pages, parses) is large: no full scans of it mid-rebuild


def on_nav(nav, config, files):
    """Take the generated pages outside the navigation out of MkDocs's own loop where that saves time:
    under `mkdocs serve`, those unchanged since the last rebuild (renamed back from its output); in a
    build, shares of them, each rendered by a forked worker."""
    in_nav = {page.file.src_uri for page in nav.pages}
    outside = [f for f in files.documentation_pages() if f.src_uri in _generated_pages and f.src_uri not in in_nav]
    _build_state.update(pages=files.documentation_pages(), nav=nav)  # all of them, in order, for the sitemap
    if _served.active:
        setting = _setting_fingerprint(config)
        _elsewhere.extend(_served.unchanged(outside, lambda f: _page_key(_generated_pages[f.src_uri], setting)))
        copied = [f for f in files if not f.is_documentation_page() and f.inclusion.is_in_serve()]  # as MkDocs does
        _build_state["static"] = _served.unchanged(copied, _static_key)
        for file in _build_state["static"]:
            files.set_aside(file)
    else:
        workers = _worker_count()
        if workers > 1 and len(outside) >= 2 * MIN_SHARE:
            shares = [outside[i::workers] for i in range(min(workers, len(outside) // MIN_SHARE))]
            for share in shares[1:]:
                _workers.append(_fork_worker(share, nav, config, files))
                _elsewhere.extend(share)
    for file in _elsewhere:
        files.set_aside(file)
    if _elsewhere and "sitemap.xml" in config.theme.static_templates:  # MkDocs's would miss them: ours, at the end
        config.theme.static_templates.discard("sitemap.xml")
        _build_state["sitemap"] = True
    if _workers:
        log.info(f"digest: {len(_elsewhere)} of {len(outside)} note and archive pages go to {len(_workers)} "
                 f"more process(es) ({WORKERS_ENV}=1 for one)")
    elif _elsewhere:
        log.info(f"digest: {len(_elsewhere)} of {len(outside)} note and archive pages unchanged since the last rebuild")
    return nav


def on_env(env, config, files):
    _build_state["env"] = env
    return env


def on_post_build(config):
    """Wait for the workers, log what they logged, fail if one failed; write the unchanged pages
    under `mkdocs serve`; then the sitemap, of every page."""
    reports = [_join_worker(pid, report) for pid, report in _workers]
    _workers.clear()  # all reaped: nothing for on_build_error to stop
    failures = [r["failure"] for r in reports if r["failure"]]
    if failures:
        raise PluginError("\n".join(failures))
    if reports:
        anchors, links = _anchor_links_left(_build_state["pages"])
        for r in reports:
            anchors.update(r["anchors"])
            links += r["links"]
        _check_anchor_links(anchors, links, config.validation.links.anchors)
    if _served.active:
        _served.write(_elsewhere + _build_state.get("static", []))
        gc.freeze()  # what this rebuild kept is long-lived: later collections need not scan it again
        gc.enable()
    if _build_state.get("sitemap"):
        mkdocs_build_module._build_theme_template("sitemap.xml", _build_state["env"], Files(_build_state["pages"]),
                                                  config, _build_state["nav"])


def on_build_error(error):
    """Stop the workers of a build that failed here; under serve, keep showing the last good site."""
    gc.enable()
    if _served.active:
        _served.put_back()
    for pid, _report in _workers:
        _stop_worker(pid)
    _workers.clear()


class _ServedPages:
    """Under `mkdocs serve`: what each generated page and copied file was made from in the last good
    rebuild, so a one-note edit renders only what changed and the rest comes back from that rebuild's
    output. This object lives in the imported ``digest.mkdocs_adapter``, which outlives rebuilds;
    MkDocs re-runs its own copy of this file each time.
    """

    def __init__(self):
        self.active = False  # under `mkdocs serve` (on_startup)
        self.made: dict[str, object] = {}  # docs path → key of what the file was made from
        self.stashed: str | None = None  # the last rebuild's output, moved aside (see stash)
        self.memo = PageMemo()  # the Markdown of note and archive pages, for render_site

    def unchanged(self, files: list, key_of) -> list:
        """Of ``files``, those made from the same inputs last time, whose output is in the stash."""
        keys = {f.src_uri: key_of(f) for f in files}
        same = [f for f in files if self.stashed and self.made.get(f.src_uri) == keys[f.src_uri]
                and os.path.exists(os.path.join(self.stashed, f.dest_uri))]
        self.made.update(keys)
        return same

    def stash(self, site_dir: str) -> None:
        """Before MkDocs empties the site folder: move the last rebuild's output aside (MkDocs leaves
        hidden entries alone), so unchanged pages come back by renaming, not writing: cheaper on disks
        where writing thousands of files takes seconds."""
        self.stashed = None
        if os.path.isdir(site_dir):
            self.stashed = tempfile.mkdtemp(prefix=".digest-previous-", dir=site_dir)
            for entry in os.listdir(site_dir):
                if not entry.startswith("."):
                    os.rename(os.path.join(site_dir, entry), os.path.join(self.stashed, entry))

    def put_back(self) -> None:
        """A rebuild failed (a note with an error, say): the previous output goes back where it was, and
        the next rebuild renders everything, since what is on disk is no longer what was last rendered."""
        if self.stashed:
            site_dir = os.path.dirname(self.stashed)
            for entry in os.listdir(self.stashed):
                if not os.path.exists(os.path.join(site_dir, entry)):
                    os.rename(os.path.join(self.stashed, entry), os.path.join(site_dir, entry))
            self._drop_stash()
        self.made.clear()

    def write(self, files: list) -> None:
        """Put the unchanged files back: whole folders renamed from the stash where nothing else is in
        them, else one by one. The rest of the stash (old versions of changed pages, deleted pages) is
        removed in the background."""
        keep = {os.path.normpath(f.dest_uri) for f in files}
        if self.stashed:
            self._merge(self._kept_folders(keep), keep, ".", os.path.dirname(self.stashed))
            self._drop_stash()

    def _drop_stash(self) -> None:
        threading.Thread(target=shutil.rmtree, args=(self.stashed, True), daemon=True).start()
        self.stashed = None

    def _kept_folders(self, keep: set[str]) -> dict[str, bool | None]:
        """Each stashed folder: True if all it holds is kept, None if some, False if nothing."""
        kept: dict[str, bool | None] = {}
        for folder, dirs, names in os.walk(self.stashed, topdown=False):
            here = os.path.relpath(folder, self.stashed)
            marks = [os.path.normpath(os.path.join(here, n)) in keep for n in names]
            marks += [kept[os.path.normpath(os.path.join(here, d))] for d in dirs]
            kept[here] = True if all(m is True for m in marks) else False if not any(marks) else None
        return kept

    def _merge(self, kept: dict, keep: set[str], here: str, site_dir: str) -> None:
        for name in os.listdir(os.path.join(self.stashed, here)):
            rel = os.path.normpath(os.path.join(here, name))
            old, new = os.path.join(self.stashed, rel), os.path.join(site_dir, rel)
            whole = kept.get(rel) if os.path.isdir(old) else rel in keep
            if whole is True and not os.path.exists(new):
                os.rename(old, new)
            elif whole is not False and os.path.isdir(old):
                os.makedirs(new, exist_ok=True)
                self._merge(kept, keep, rel, site_dir)


SERVED = _ServedPages()
GIVEN: dict = {}  # set by build() for `digest build`: the content folder and what it loaded from it
# The hook copy of this file uses the imported copy's, which outlives rebuilds (importing it from
# itself, mid-import, returns the module as it stands: both names are defined above).
_imported = importlib.import_module("digest.mkdocs_adapter")
_served, _given = _imported.SERVED, _imported.GIVEN


def _page_key(page, setting: str) -> str:
    parts = (page.path, page.text, page.before, page.after, page.trusted_after, setting)
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def _static_key(file) -> tuple:
    if file._content is not None:  # generated: feeds, search index
        text = file._content if isinstance(file._content, bytes) else file._content.encode("utf-8")
        return (file.dest_uri, hashlib.sha256(text).digest())
    stat = os.stat(file.abs_src_path)
    return (file.dest_uri, file.abs_src_path, stat.st_size, stat.st_mtime_ns)


def _setting_fingerprint(config) -> str:
    """What every page's HTML depends on besides its own text: the config file, the theme's version,
    and the files of the theme overrides and of docs/ (names, sizes, times)."""
    import material

    parts = [Path(config.config_file_path).read_text(encoding="utf-8"), getattr(material, "__version__", "")]
    for folder in [config.docs_dir, *(d for d in config.theme.dirs if not d.startswith(sys.prefix))]:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                stat = path.stat()
                parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _worker_count() -> int:
    text = os.environ.get(WORKERS_ENV, "").strip()
    if not hasattr(os, "fork"):  # Windows: one process
        return 1
    if not text:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(8, cores)
    if not text.isdigit() or int(text) < 1:
        raise PluginError(f"{WORKERS_ENV}={text!r} is not a number of processes; write e.g. 2, or 1 for one process")
    return int(text)


def _fork_worker(share: list, nav, config, files) -> tuple[int, str]:
    """Start a process that builds ``share``; it never returns into MkDocs (``os._exit``)."""
    handle, report = tempfile.mkstemp(prefix="digest-build-", suffix=".json")
    os.close(handle)
    pid = os.fork()
    if pid:
        return pid, report
    status = 1
    try:
        status = _build_share(share, nav, config, files, Path(report))
    finally:
        os._exit(status)


def _build_share(share: list, nav, config, files, report: Path) -> int:
    """In a worker: MkDocs's own read-render-write of each page of ``share``, its records kept for the parent."""
    records: list[dict] = []
    failure = ""
    keeper = _RecordKeeper(records)
    logger = logging.getLogger("mkdocs")
    logger.handlers, logger.propagate = [keeper], False  # the parent prints them, once
    try:
        for file in share:
            mkdocs_build_module._populate_page(file.page, config, files)
        env = config.plugins.on_env(config.theme.get_env(), config=config, files=files)
        everything = files.documentation_pages()
        for file in share:
            mkdocs_build_module._build_page(file.page, config, everything, nav, env)
        for file in share:  # MkDocs skips links into pages rendered elsewhere: the parent checks those
            file.page.validate_anchor_links(files=files, log_level=config.validation.links.anchors)
        anchors, links = _anchor_links_left(share)
    except Exception as exc:  # reported to the parent, which fails the build with it (MkDocs logged the page)
        failure = str(exc) if isinstance(exc, (PluginError, Abort)) else f"{type(exc).__name__}: {exc}"
        anchors, links = {}, []
    report.write_text(json.dumps({"records": records, "failure": failure, "anchors": anchors, "links": links}),
                      encoding="utf-8")
    return 1 if failure else 0


def _anchor_links_left(files) -> tuple[dict[str, list[str]], list[list[str]]]:
    """Of the pages rendered in this process: the anchors of each, and the links with an anchor into
    pages rendered in another (whose anchors MkDocs could not see here) as [from, to, anchor, link]."""
    anchors, links = {}, []
    for file in files:
        page = file.page
        if page is None or page.present_anchor_ids is None:
            continue
        anchors[file.src_uri] = sorted(page.present_anchor_ids)
        for target, found in (page.links_to_anchors or {}).items():
            if target.page is None or target.page.present_anchor_ids is None:
                links.extend([file.src_uri, target.src_uri, anchor, link] for anchor, link in found.items())
    return anchors, links


def _check_anchor_links(anchors: dict[str, list[str]], links: list[list[str]], level: int) -> None:
    """What MkDocs's validate_anchor_links says, for links between pages rendered in different processes."""
    pages_log = logging.getLogger("mkdocs.structure.pages")
    for source, target, anchor, link in links:
        if target in anchors and anchor not in anchors[target]:
            pages_log.log(level, f"Doc file '{source}' contains a link '{link}', but the doc '{target}' "
                                 f"does not contain an anchor '#{anchor}'.")


class _RecordKeeper(logging.Handler):
    def __init__(self, records: list[dict]):
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"name": record.name, "level": record.levelno, "message": record.getMessage()})


def _join_worker(pid: int, report: str) -> dict:
    """Wait for a worker, log its records here, and return its report: failure ('' when it succeeded),
    the anchors of its pages, its links into other processes' pages."""
    _, status = os.waitpid(pid, 0)
    path = Path(report)
    try:
        found = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size else None
    except FileNotFoundError:
        found = None
    finally:
        path.unlink(missing_ok=True)
    if found is None:
        return {"failure": f"a page worker (pid {pid}) died without a report (status {status}); "
                           f"run again with {WORKERS_ENV}=1"}
    for record in found["records"]:
        logging.getLogger(record["name"]).log(record["level"], record["message"])
    return found


def _stop_worker(pid: int) -> None:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def on_page_content(html, page, config, files):
    """Put a generated page's HTML parts around its rendered Markdown, and sanitize it all.

    Note bodies are untrusted Markdown; the parts come from auto-escaping templates,
    but one allow-list over the whole page is simpler to trust than two rules.
    """
    generated = _generated_pages.get(page.file.src_uri)
    if generated is None:
        return html
    cleaned = sanitize.clean("\n".join(part for part in (generated.before, html, generated.after) if part))
    return cleaned + generated.trusted_after  # our own template's form, which the allow-list would drop


def _refuse_existing(files, path: str) -> None:
    if files.get_file_from_path(path) is not None:
        raise PluginError(f"{path} is generated from content/ and must not exist in docs/")


def _site_config(config) -> SiteConfig:
    extra = config.extra or {}
    return SiteConfig(
        repo_url=extra.get("repo_url") or config.repo_url or SiteConfig.repo_url,
        branch=extra.get("repo_branch") or SiteConfig.branch,
        site_url=config.site_url or SiteConfig.site_url,
        site_name=config.site_name or SiteConfig.site_name,
        cache_dir=_content_root(config).parent / CACHE_DIR,
    )


def _service_url(extra: dict) -> str | None:
    """DIGEST_SERVICE_URL when set; set but empty (a workflow whose repository has no service) means
    no form; unset, mkdocs.yml's ``extra.subscribe_url`` or the loopback `digest serve`."""
    if SERVICE_ENV in os.environ:
        return os.environ[SERVICE_ENV].strip() or None
    return extra.get("subscribe_url") or LOCAL_SERVICE


def build_site(site_dir: Path, content_root: Path, loaded: tuple) -> None:
    """`digest build`'s site step (``digest.pipeline.build.SiteBuilder``): mkdocs.yml's site from content
    the pipeline has loaded and checked."""
    build(site_dir=str(site_dir), content=(content_root, loaded))


def on_shutdown():
    search.save_kept_caches()


def on_serve(server, config, builder):
    """Rebuild when a note, registry or reference result changes; have Kiwi ready for the first edit."""
    server.watch(str(_content_root(config)))
    threading.Thread(target=search.warm_analyzer, name="digest-kiwi", daemon=True).start()
    return server


def build(config_file: str = "mkdocs.yml", site_dir: str | None = None, strict: bool = True,
          content: tuple | None = None) -> None:
    """``mkdocs build`` from Python, for ``digest build``. ``content``: (folder, (content, refs)) that the
    caller has loaded and checked: the site is built from exactly that, without loading it again."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # the EOL notice is ours to track, not the reader's
    overrides = {"site_dir": site_dir} if site_dir else {}
    config = load_config(config_file, strict=strict, **overrides)
    if content:
        GIVEN.update(root=Path(content[0]).resolve(), loaded=content[1])
    try:
        mkdocs_build(config)
    except (PluginError, Abort) as exc:
        raise SiteBuildError(str(exc)) from None
    finally:
        GIVEN.clear()
