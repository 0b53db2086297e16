"""The `digest` command: a thin adapter from arguments to the pipeline's functions.

Every failure the user can act on is a DigestError and prints as one message;
a bug prints one line asking for a report (set DIGEST_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from digest.errors import DigestError, UsageError

DEFAULT_CONTENT = Path("content")


def _content_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT, metavar="DIR",
                        help="content folder (default: ./content)")


ANNOTATE_HELP = "also print GitHub Actions annotations (automatic when GITHUB_ACTIONS=true, unless DIGEST_ANNOTATE=0)"


def _annotate(args) -> bool:
    """GitHub annotations: asked for, or on Actions unless DIGEST_ANNOTATE=0 (a job that repeats a
    check another job annotates: one problem should be one annotation on the pull request)."""
    on_actions = os.environ.get("GITHUB_ACTIONS") == "true" and os.environ.get("DIGEST_ANNOTATE") != "0"
    return args.github or on_actions


def cmd_check(args) -> int:
    from digest.pipeline.check import check

    result = check(args.content, args.paths)
    for line in result.lines(github=_annotate(args)):
        print(line)
    return 0 if result.ok else 1


def cmd_schema(args) -> int:
    from digest.content.schema import all_schemas

    schemas = all_schemas()
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas.items():
            (args.write / name).write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
            print(f"wrote {args.write / name}")
    else:
        print(json.dumps(schemas[f"{args.which}.schema.json"], ensure_ascii=False, indent=2))
    return 0


def cmd_new(args) -> int:
    from digest.authoring.new import new_note_from_args

    path = new_note_from_args(args)
    print(f"created {path}")
    print(f"next: replace the template text in it with your own, then run `digest check {path}`")
    return 0


def cmd_links(args) -> int:
    from digest.authoring.links import Politeness, run

    politeness = Politeness(per_host=args.per_host, delay=args.delay, timeout=args.timeout,
                            concurrency=args.concurrency)
    cache = None if args.no_cache else args.content.parent / args.cache
    report = run(args.content, politeness, cache, args.max_age,
                 warn=lambda message: print(f"digest links: {message}", file=sys.stderr))
    for line in report.lines(github=_annotate(args)):
        print(line)
    if args.report:
        args.report.write_text(report.markdown(), encoding="utf-8")
    return 1 if report.count("broken") else 0


def cmd_build(args) -> int:
    from digest.mkdocs_adapter import build_site
    from digest.pipeline.build import build

    build(args.content, site_dir=args.site_dir, outbox=args.outbox, build_site=build_site)
    return 0


def _selected_refs(args):
    from digest.refs.engine import load_references

    refs = load_references(args.content)
    unknown = [n for n in args.names if n not in refs]
    if unknown:
        raise UsageError(f"unknown reference(s): {', '.join(unknown)}; known: {', '.join(refs) or 'none'}")
    return [refs[n] for n in (args.names or refs)]


def cmd_refs_run(args) -> int:
    from digest.refs.engine import run_reference

    for ref in _selected_refs(args):
        run_reference(ref, args.profile, resume=args.resume, timeout=args.timeout, stop_after=args.stop_after)
    return 0


def cmd_refs_progress(args) -> int:
    from digest.refs.engine import report_progress

    for ref in _selected_refs(args):
        if args.names or ref.manifest.progress:  # by default, the references that show progress
            report_progress(ref, args.profile)
    return 0


def cmd_refs_verify(args) -> int:
    from digest.refs.engine import drift_table, verify

    failed = 0
    for ref in _selected_refs(args):
        drifts = verify(ref)
        if drifts:
            failed += 1
            print(drift_table(ref.name, drifts))
        else:
            print(f"{ref.name}: quick profile matches the committed results within tolerance")
    return 1 if failed else 0


def cmd_refs_status(args) -> int:
    from digest.refs.engine import is_fresh, state_summary

    for ref in _selected_refs(args):
        for profile in ref.manifest.profiles:
            result = ref.results.get(profile)
            if result is None:
                state = "no results"
            else:
                state = ("fresh" if is_fresh(ref, profile) else "STALE") + f", finished {result.finished}"
            print(f"{ref.name:<20} {profile:<6} {state}")
            if saved := state_summary(ref, profile):
                print(f"{'':<20} {'':<6} {saved}")
            if report := ref.unfinished(profile):
                print(f"{'':<20} {'':<6} the site shows its progress as of {report.finished}")
    return 0


def _mail_config(args) -> tuple[dict, dict]:
    from digest.mail.message import read_config

    return os.environ, read_config(args.config or os.environ.get("DIGEST_CONFIG"))


def _mail_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML settings file (default: $DIGEST_CONFIG); environment variables win; "
                             "passwords and keys only from the environment")
    parser.add_argument("--outbox", type=Path, default=Path("outbox"), metavar="DIR")
    _content_arg(parser)


def _week(args, default):
    from digest.mail.compose import IsoWeek

    return IsoWeek.parse(args.week) if args.week else default()


def cmd_issue(args) -> int:
    from digest.mail.compose import compose, current_week, write_outbox
    from digest.mail.message import mail_settings
    from digest.pipeline.check import load_content

    env, config = _mail_config(args)
    content, _ = load_content(args.content)
    settings = mail_settings(env, config)
    issue = compose(content, _week(args, current_week), settings.site_url, allow_empty=args.allow_empty)
    folder = write_outbox(issue, content, settings, args.outbox)
    print(f"composed {issue.id} ({issue.week.label}): {len(issue.notes)} note(s) → {folder}/ "
          "issue.html issue.txt issue.eml issue.json")
    return 0


def _store(args, env, config, create: bool = False):
    """The subscriber store; only the commands that add subscribers may start a new one."""
    from digest.mail.message import setting
    from digest.subscribers.store import open_store

    return open_store(args.store or setting(env, config, "send", "store"), create=create)


def cmd_send(args) -> int:
    env, config = _mail_config(args)
    with contextlib.closing(_store(args, env, config)) as store:  # a PostgreSQL pool ends with the command
        return _send(args, env, config, store)


def _send(args, env, config, store) -> int:
    from digest.mail.compose import compose as compose_issue
    from digest.mail.compose import finished_week, render, weeks_with_notes
    from digest.mail.deliver import OutboxTransport, SmtpTransport, send, send_settings, smtp_settings, status_report
    from digest.mail.message import mail_settings
    from digest.pipeline.check import load_content

    content, _ = load_content(args.content)
    week = _week(args, finished_week)
    if args.status:  # every channel the week went out on, unless --to names one
        lines, code = status_report(store, week.name, args.to, addresses=args.addresses)
        print("\n".join(lines))
        return code
    channel = args.to or "outbox"
    if args.skip_empty and week not in weeks_with_notes(content):
        print(f"no notes are dated in {week.name} ({week.label}): no issue, nothing sent")
        return 0
    settings = mail_settings(env, config)
    issue = compose_issue(content, week, settings.site_url,
                          if_empty="pick one of those, or pass --skip-empty to send nothing and exit 0")
    template = render(issue, content, settings, store.secret(), link_key=store.keyring().current)
    envelope_from = settings.sender
    if channel == "smtp":
        settings.refuse_placeholders()
        smtp = smtp_settings(env, config)
        envelope_from = smtp.envelope_from or settings.sender
        factory = lambda: SmtpTransport(smtp)  # noqa: E731
    else:
        folder, secret = args.outbox / week.name / "mail", store.secret()
        factory = lambda: OutboxTransport(folder, secret)  # noqa: E731
    signal.signal(signal.SIGTERM, _interrupt)  # a cancelled CI job: finish the message in flight, then stop
    try:
        counts = send(store, template, channel, factory, send_settings(env, config), envelope_from,
                      resend_ambiguous=args.resend_ambiguous or False, ignore_bounces=args.ignore_bounces,
                      ignore_complaints=args.ignore_complaints)
    except KeyboardInterrupt:  # send() finished and recorded the messages in flight before stopping
        print("digest send: interrupted; nothing is lost: the ledger records who was sent, and the same "
              "command, run again, sends to everyone not yet sent and to nobody twice", file=sys.stderr)
        return 130
    print(" · ".join(f"{state} {n}" for state, n in counts.items() if n) or "no confirmed subscribers")
    if counts["ambiguous"]:
        print(f"{counts['ambiguous']} ambiguous: maybe delivered when a sender stopped; not resent. "
              f"See `digest send --status --week {week.name} --to {channel}`: it says which were never accepted "
              "(--resend-ambiguous before-end) and which may have been (after-end)")
    return 75 if counts["pending"] else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _known_tags(args) -> set[str]:
    from digest.pipeline.check import load_content

    content, _ = load_content(args.content)
    return set(content.tags)


def _subscribers_list(args, store) -> int:
    """One line per subscriber; the address only with --addresses, else its keyed hash."""
    from digest.subscribers.store import keyed_hash

    secret = store.secret()
    for s in store.subscribers(args.status):
        who = s.address if args.addresses else keyed_hash(secret, s.address)
        print(f"#{s.id:<7} {s.status:<13} {s.created[:10]}  {who}  {' '.join(s.topics) or '(all topics)'}")
    return 0


def _subscribers_remove(args, store) -> int:
    """Erase one subscriber (topics, confirmations and ledger rows too)."""
    from digest.subscribers.store import keyed_hash

    found = store.get(args.id) if args.id is not None else store.find(args.address or "")
    if found is None or not store.remove(found.id):
        print("no such subscriber; nothing removed", file=sys.stderr)
        return 1
    print(f"removed subscriber #{found.id} ({keyed_hash(store.secret(), found.address)})")
    return 0


def _subscribers_export(args, store) -> int:
    """CSV (email,topics,status,created) that `subscribers import` and other newsletter tools read."""
    import csv

    rows = store.subscribers(args.status)
    if str(args.file) == "-":
        handle = sys.stdout
    else:
        descriptor = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # addresses: owner only
        handle = open(descriptor, "w", newline="", encoding="utf-8")
    with contextlib.nullcontext(handle) if handle is sys.stdout else handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["email", "topics", "status", "created"])
        writer.writerows([s.address, " ".join(s.topics), s.status, s.created] for s in rows)
    print(f"exported {len(rows)} subscriber(s) to {args.file}", file=sys.stderr)
    return 0


def _subscribers_purge(args, store) -> int:
    from digest.subscribers.store import PURGE_AFTER_DAYS

    days = PURGE_AFTER_DAYS if args.days is None else args.days
    erased = store.purge_unconfirmed(days)
    print(f"erased {erased} sign-up(s) nobody confirmed, {days:g} day(s) after their last link expired")
    return 0


def _subscribers_rotate_key(args, store) -> int:
    """A new link-signing key; the previous one verifies old links for --keep-days (0: refused)."""
    import time

    from digest.subscribers.store import KEEP_RETIRED_DAYS

    keep = KEEP_RETIRED_DAYS if args.keep_days is None else args.keep_days
    done = store.rotate_signing_key(keep)
    print(f"new link-signing key #{done.new_id}: new links are signed with it (running servers take it "
          "within DIGEST_SERVE_KEY_REFRESH, 30 s by default; `digest send` at its next start)")
    if done.retired_id is None:
        print("the store had no current key; links signed before keep the days their keys had left")
    elif done.verify_until is None:
        print(f"key #{done.retired_id} and every key before it revoked: each link signed before now (unsubscribe "
              "and preferences links in mail already sent, open confirmation links) is refused from now on")
    else:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(done.verify_until))
        print(f"key #{done.retired_id} retired: links signed before now keep working until {until} at most "
              f"({keep:g} days), then are refused")
    print(f"{done.verifying} retired key(s) verify links now; {done.erased} erased; keyed hashes in logs "
          "are unchanged (their key is never rotated)")
    return 0


def _subscribers_suppressed(args, store) -> int:
    """Addresses that no import, add or stranger's form post may sign up again, by reason: the store
    keeps a keyed hash of each, never the address, so none can be listed."""
    suppressed = store.suppression_counts()
    for reason, count in suppressed.items():
        print(f"{reason:<13} {count}")
    print(f"{'total':<13} {sum(suppressed.values())} (kept as keyed hashes: no address can be shown; only "
          "the reader's own confirmation lifts one)")
    return 0


SUBSCRIBER_ACTIONS = {"list": _subscribers_list, "remove": _subscribers_remove, "export": _subscribers_export,
                      "purge": _subscribers_purge, "rotate-key": _subscribers_rotate_key,
                      "suppressed": _subscribers_suppressed}


def cmd_subscribers(args) -> int:
    env, config = _mail_config(args)
    with contextlib.closing(_store(args, env, config, create=args.action in ("add", "import"))) as store:
        return _subscribers(args, store)


def _subscribers(args, store) -> int:
    from digest.subscribers.store import keyed_hash, read_csv

    if args.action == "count":
        for status in ("confirmed", "pending", "unsubscribed"):
            print(f"{status:<13} {store.count(status)}")
        suppressed = store.suppression_counts()  # they outlive erased rows; never an address
        reasons = ", ".join(f"{reason} {count}" for reason, count in suppressed.items())
        print(f"{'suppressed':<13} {sum(suppressed.values())} ({reasons})")
        return 0
    if args.action in SUBSCRIBER_ACTIONS:
        return SUBSCRIBER_ACTIONS[args.action](args, store)
    status = "pending" if args.pending else "confirmed"
    known = _known_tags(args)
    if args.action == "add":
        unknown = [t for t in args.topic if t not in known]
        if unknown:
            raise UsageError(f"unknown topic(s): {', '.join(unknown)}; topics are tag ids of content/tags.yml")
        subscriber, created = store.add(args.address, args.topic, status=status)
        if subscriber is None or subscriber.status != status:
            reason = store.suppression(args.address) or "unsubscribed"
            print(f"left the address as it is: it is suppressed ({reason}), and only its reader can sign up again, "
                  "through the site's form, by the link it mails them", file=sys.stderr)
            return 1
        who = f"subscriber #{subscriber.id} ({keyed_hash(store.secret(), subscriber.address)})"
        print(f"{'added' if created else 'updated'} {who}, {status}")
        return 0
    rows, problems = read_csv(args.file, known, status)
    outcome = store.add_many(rows, source=f"import:{args.file.name}")
    for line in problems:
        print(line, file=sys.stderr)
    print(f"imported {outcome.created + outcome.updated} subscriber(s): {outcome.created} new, "
          f"{outcome.updated} updated; {len(problems)} row(s) refused")
    if outcome.skipped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(outcome.skipped.items()))
        print(f"skipped {sum(outcome.skipped.values())} suppressed address(es) ({reasons}): only their readers "
              "can sign up again, through the site's form, by the link it mails them", file=sys.stderr)
    return 1 if problems else 0


def cmd_bounces(args) -> int:
    from digest.mail.bounces import ImapSource, MaildirSource, bounce_settings, imap_settings, process, summary
    from digest.mail.message import mail_settings

    env, config = _mail_config(args)
    mail, settings = mail_settings(env, config), bounce_settings(env, config)
    with contextlib.closing(_store(args, env, config)) as store:
        source = MaildirSource(args.maildir) if args.maildir else ImapSource(imap_settings(env, config))
        try:
            counts = process(store, source, mail, settings, print)
        finally:
            source.close()
    print(summary(counts))
    return 0


def cmd_serve(args) -> int:
    import dataclasses

    from digest.mail.message import mail_settings
    from digest.pipeline.check import load_content
    from digest.service.app import run, serve_settings

    env, config = _mail_config(args)
    outbox = args.outbox if args.outbox != Path("outbox") else None
    if args.check:
        return _serve_check(args, env, config, outbox)
    settings = serve_settings(env, config, host=args.host, port=args.port, mail=args.mail, outbox=outbox)
    mail = dataclasses.replace(mail_settings(env, config), service_url=settings.base_url)
    smtp = None
    if settings.mail == "smtp":
        from digest.mail.deliver import smtp_settings

        mail.refuse_placeholders()
        smtp = smtp_settings(env, config)
    content, _ = load_content(args.content)
    run(settings, _store(args, env, config, create=True), mail, content.tags, smtp)
    return 0


def _serve_check(args, env, config, outbox) -> int:
    """`digest serve --check`: every finding in English and Korean; 0 only when nothing fails."""
    from digest.mail.message import setting
    from digest.pipeline.check import load_content
    from digest.service.check import check_setup, report_lines

    findings = check_setup(env, config, host=args.host, port=args.port, mail=args.mail, outbox=outbox,
                           store=args.store or setting(env, config, "send", "store"),
                           count_topics=lambda: len(load_content(args.content)[0].tags))
    print("\n".join(report_lines(findings)))
    return 1 if any(f.level == "fail" for f in findings) else 0


def cmd_doctor(args) -> int:
    """`digest doctor`: SPF, DKIM, DMARC and the relay's TLS, in English and Korean; 0 only when nothing fails."""
    from digest.mail.doctor import doctor_lines, examine

    env, config = _mail_config(args)
    findings = examine(env, config, nameserver=args.dns_server)
    print("\n".join(doctor_lines(findings)))
    return 1 if any(f.level == "fail" for f in findings) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digest",
        description="Curated ML reading notes in Korean: check the YAML content, run reference "
                    "implementations, build the site and the weekly email digest.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="validate notes and registries; one line per problem",
                       description="Validate content/. Each problem is printed as file:line:col with "
                                   "what is wrong and how to fix it. Exit 1 on errors.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="report only these files or folders")
    p.add_argument("--github", action="store_true", help=ANNOTATE_HELP)
    _content_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("schema", help="print the JSON Schema of notes (for editors)",
                       description="Print the JSON Schema generated from the content model.")
    p.add_argument("which", nargs="?", default="note", choices=("note", "tags", "people"))
    p.add_argument("--write", type=Path, metavar="DIR", help="write all schemas into DIR instead")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new", help="create a new note from flags or questions",
                       description="Create content/notes/<yyyy>/<slug>.yml. Missing values are asked "
                                   "for when a terminal is attached. Its body is a template to replace: "
                                   "`digest check` reports the template text until you do.")
    p.add_argument("--title", help="Korean title")
    p.add_argument("--kind", help="paper, qa, tutorial, course, event, news or translation")
    p.add_argument("--tag", action="append", default=[], metavar="ID", help="tag id (repeatable)")
    p.add_argument("--person", action="append", default=[], metavar="ID", help="person id (repeatable)")
    p.add_argument("--source", action="append", default=[], metavar="URL", help="source link (repeatable)")
    p.add_argument("--slug", help="URL name (default: romanized from the title)")
    p.add_argument("--date", help="YYYY-MM-DD (default: today in Seoul)")
    p.add_argument("--summary", help="one or two sentences (required with --no-input)")
    p.add_argument("--no-input", action="store_true",
                   help="never ask; fail on missing values (title, summary, source)")
    fetched = p.add_mutually_exclusive_group()
    fetched.add_argument("--arxiv", metavar="ID", help="fetch title, authors and date of an arXiv paper "
                         "(e.g. 1606.04080) and fill the source and people")
    fetched.add_argument("--url", metavar="URL", help="fetch title, authors and date of a web page")
    p.add_argument("--add-people", action="store_true",
                   help="append authors missing from people.yml to it (default: print entries to paste)")
    _content_arg(p)
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("links", help="check every external link in the content",
                       description="Check every external link of notes (sources and body links) and "
                                   "people concurrently: HEAD then GET, redirects followed. Prints broken "
                                   "and moved links as file:line: status url; exit 1 on broken links.")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S", help="seconds per request (default 15)")
    p.add_argument("--per-host", type=int, default=2, metavar="N", help="requests at once to one host (default 2)")
    p.add_argument("--delay", type=float, default=1.0, metavar="S",
                   help="seconds between requests to one host (default 1)")
    p.add_argument("--concurrency", type=int, default=16, metavar="N", help="requests at once in all (default 16)")
    p.add_argument("--cache", type=Path, default=Path(".cache/links.json"), metavar="FILE",
                   help="cache of good results, relative to the project root (default .cache/links.json)")
    p.add_argument("--max-age", type=float, default=24 * 7, metavar="HOURS",
                   help="recheck links whose good result is older than this (default 168)")
    p.add_argument("--no-cache", action="store_true", help="check every link, read and write no cache")
    p.add_argument("--report", type=Path, metavar="FILE", help="also write a Markdown report (for an issue)")
    p.add_argument("--github", action="store_true", help=ANNOTATE_HELP)
    _content_arg(p)
    p.set_defaults(func=cmd_links)

    refs = sub.add_parser("refs", help="run and verify reference implementations",
                          description="Reference implementations live in content/refs/<name>/.")
    refs_sub = refs.add_subparsers(dest="refs_command", metavar="ACTION", required=True)
    p = refs_sub.add_parser("run", help="run references and write results/<profile>/",
                            description="Run references in a subprocess with a time limit and progress, "
                                        "and write results/<profile>/results.json plus figures.")
    p.add_argument("names", nargs="*", metavar="NAME", help="references to run (default: all)")
    p.add_argument("--profile", choices=("quick", "full"), default="quick")
    p.add_argument("--resume", action="store_true", help="continue a stopped run from its checkpoint")
    p.add_argument("--timeout", type=float, metavar="S", help="override the manifest's time limit")
    p.add_argument("--stop-after", type=float, metavar="S",
                   help="stop a resumable run after S seconds, keeping its checkpoints (continue with --resume)")
    _content_arg(p)
    p.set_defaults(func=cmd_refs_run)
    p = refs_sub.add_parser("progress", help="draw an unfinished run's progress from its last checkpoint",
                            description="Have each resumable reference's script read the last checkpoint of "
                                        "an unfinished run (no training) and write its numbers and figures to "
                                        "state/<profile>/progress/, which notes show with ref_progress until "
                                        "the run finishes. --stop-after does this by itself.")
    p.add_argument("names", nargs="*", metavar="NAME", help="references (default: all)")
    p.add_argument("--profile", choices=("quick", "full"), default="full")
    _content_arg(p)
    p.set_defaults(func=cmd_refs_progress)
    p = refs_sub.add_parser("verify", help="rerun quick profiles and compare with committed results",
                            description="Rerun each quick profile in a temporary folder and compare every "
                                        "metric with the committed quick results within its tolerance; "
                                        "print a table of drifts and exit 1 if any.")
    p.add_argument("names", nargs="*", metavar="NAME")
    _content_arg(p)
    p.set_defaults(func=cmd_refs_verify)
    p = refs_sub.add_parser("status", help="which results are committed and fresh")
    p.add_argument("names", nargs="*", metavar="NAME")
    _content_arg(p)
    p.set_defaults(func=cmd_refs_status)

    p = sub.add_parser("build", help="content → site/ and this week's digest in outbox/",
                       description="Validate content, build the static site and compose this week's "
                                   "digest issue, on embedded defaults.")
    p.add_argument("--site-dir", type=Path, default=Path("site"), metavar="DIR")
    p.add_argument("--outbox", type=Path, default=Path("outbox"), metavar="DIR")
    _content_arg(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("issue", help="compose a week's email issue into outbox/<week>/",
                       description="Compose the issue of an ISO week (Asia/Seoul; default: this week) into "
                                   "outbox/<yyyy>-W<ww>/: issue.html, issue.txt, issue.eml (a preview addressed "
                                   "to nobody real) and issue.json (what went in).")
    p.add_argument("--week", metavar="YYYY-Www", help="e.g. 2016-W28 (default: the current week)")
    p.add_argument("--allow-empty", action="store_true", help="compose even when no note is dated in the week")
    _mail_args(p)
    p.set_defaults(func=cmd_issue)

    p = sub.add_parser("send", help="deliver a week's issue to every confirmed subscriber, exactly once",
                       description="Send the issue to every confirmed subscriber not yet sent, recording each "
                                   "in the delivery ledger: rerunning after a crash sends to nobody twice and "
                                   "skips nobody. --to outbox (default) writes one .eml per recipient into "
                                   "outbox/<week>/mail/; --to smtp sends through DIGEST_SMTP_* settings. Exit 75 "
                                   "when recipients remain (temporary failures, pause): run it again later. Exit 5: "
                                   "not started, the previous issue's complaint rate is at or over 0.3%. "
                                   "--status: exit 4 while ambiguous recipients remain.")
    p.add_argument("--week", metavar="YYYY-Www",
                   help="e.g. 2016-W28 (default: last week, the latest whose Sunday is over in Seoul)")
    p.add_argument("--to", choices=("outbox", "smtp"), default=None,
                   help="where to send (default: outbox); with --status, only this channel (default: every "
                        "channel the week was sent on)")
    p.add_argument("--status", action="store_true",
                   help="report what was sent, per channel and state, and the issue's bounces, complaints and "
                        "unsubscribes; send nothing; exit 4 while ambiguous recipients remain")
    p.add_argument("--addresses", action="store_true", help="with --status: also list each recipient's address")
    p.add_argument("--resend-ambiguous", nargs="?", const="all", choices=("all", "before-end", "after-end"),
                   metavar="WHICH",
                   help="send again to ambiguous recipients: before-end, those whose sender stopped before the "
                        "message's final '.' was written (never accepted: no duplicate); after-end, those "
                        "stopped after it, before the reply (maybe accepted: each may get a second copy); "
                        "all (the default) both")
    p.add_argument("--ignore-bounces", action="store_true",
                   help="continue past the pause for too many permanent failures")
    p.add_argument("--ignore-complaints", action="store_true",
                   help="start the issue although the previous one's complaint rate is at or over 0.3%%: "
                        "dangerous, at that rate Gmail, Yahoo and Outlook block or spam-folder the sending "
                        "domain for every reader, and its reputation takes weeks to recover")
    p.add_argument("--skip-empty", action="store_true",
                   help="a week without notes is not an error: send nothing and exit 0 (for schedules)")
    p.add_argument("--store", metavar="PATH", help="subscriber store (default: $DIGEST_STORE or "
                                                   "var/subscribers.sqlite3)")
    _mail_args(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("doctor", help="check the sending domain's SPF, DKIM, DMARC and the relay's TLS before sending",
                       description="Check the sending domain against the bulk-sender rules (Gmail, Yahoo, Outlook): "
                                   "SPF of the envelope domain covers the relay (DIGEST_SMTP_HOST), the DKIM key "
                                   "in DNS is the configured one, DMARC exists and aligns with the From domain, "
                                   "the relay offers TLS (EHLO only: no login, no mail). Each problem comes with "
                                   "the record to publish, in English and Korean. Exit 0 when everything passes, "
                                   "1 otherwise.")
    p.add_argument("--dns-server", metavar="HOST[:PORT]",
                   help="ask this nameserver (an IP address; default: $DIGEST_DNS_SERVER, else the system's)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML settings file (default: $DIGEST_CONFIG); environment variables win")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("subscribers", help="count, list, add, remove, export or import subscribers; rotate-key",
                       description="Manage the subscriber store. Addresses are never logged, and printed "
                                   "only when asked (`list --addresses`, `export`); reports show a keyed hash.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("add", help="add (or update) one confirmed subscriber")
    a.add_argument("address")
    a.add_argument("--topic", action="append", default=[], metavar="TAG", help="tag id (repeatable; default: all)")
    a.add_argument("--pending", action="store_true", help="not confirmed yet: gets no issue until confirmed")
    a = actions.add_parser("import", help="import a CSV file (email[,topics][,status] with a header row)")
    a.add_argument("file", type=Path)
    a.add_argument("--pending", action="store_true", help="rows without a status column are not confirmed yet")
    actions.add_parser("count", help="how many subscribers, per status")
    actions.add_parser("suppressed", help="how many addresses are suppressed, per reason (unsubscribed, bounced, "
                       "complained)")
    a = actions.add_parser("list", help="one line per subscriber: id, status, date, keyed hash, topics",
                           description="List subscribers. Addresses are shown only with --addresses.")
    a.add_argument("--status", choices=("pending", "confirmed", "unsubscribed"))
    a.add_argument("--addresses", action="store_true", help="show each address instead of its keyed hash")
    a = actions.add_parser("remove", help="erase one subscriber (topics, confirmations, ledger rows)")
    a.add_argument("address", nargs="?", help="the address to erase")
    a.add_argument("--id", type=int, metavar="N", help="erase subscriber #N instead (as `list` shows it)")
    a = actions.add_parser("export", help="write a CSV file (email,topics,status,created) with the addresses",
                           description="Export subscribers as CSV for `subscribers import` or another "
                                       "newsletter tool. The file is created readable by its owner only; "
                                       "'-' writes the addresses to standard output.")
    a.add_argument("file", type=Path, help="CSV file to write, or - for standard output")
    a.add_argument("--status", choices=("pending", "confirmed", "unsubscribed"))
    a = actions.add_parser("purge", help="erase web sign-ups nobody confirmed (digest serve does it at start)",
                           description="Erase the pending sign-ups from the web form whose confirmation "
                                       "links all expired more than --days ago, with everything about them.")
    a.add_argument("--days", type=float, default=None,
                   help="default: a week (PURGE_AFTER_DAYS in digest.subscribers.store)")
    a = actions.add_parser("rotate-key", help="make a new link-signing key (unsubscribe, preferences, confirm links)",
                           description="Sign every new link with a new key. Links signed with the previous key "
                                       "(in mail already sent) keep working for --keep-days, then are refused; "
                                       "--keep-days 0 refuses them at once (a key that leaked). DIGEST_SECRET "
                                       "keys only the service's form tokens; the keyed hashes in logs are "
                                       "unchanged.")
    a.add_argument("--keep-days", type=float, default=None, metavar="DAYS",
                   help="how long links signed before stay valid (default: 365, KEEP_RETIRED_DAYS)")
    for a in actions.choices.values():
        a.add_argument("--store", metavar="PATH", help="default: $DIGEST_STORE or var/subscribers.sqlite3")
        a.add_argument("--config", type=Path, metavar="FILE")
        _content_arg(a)
    p.set_defaults(func=cmd_subscribers)

    p = sub.add_parser("bounces", help="read the bounce mailbox: suppress hard bounces and complaints, honour "
                                       "mailto unsubscribes",
                       description="Read every message of the bounce mailbox (IMAP: DIGEST_IMAP_*; or --maildir) "
                                   "and classify it: a hard bounce or a spam complaint suppresses the subscriber "
                                   "at once, soft bounces after DIGEST_SOFT_BOUNCE_LIMIT within "
                                   "DIGEST_SOFT_BOUNCE_DAYS, an 'unsubscribe <token>' mail unsubscribes; "
                                   "auto-replies, forged tokens, other lists' bounces and broken mail are "
                                   "reported and skipped. Each message is applied once and moved to the "
                                   "digest-processed folder, never deleted. Reports show keyed hashes only.")
    p.add_argument("--maildir", type=Path, metavar="DIR", help="read this local Maildir instead of IMAP")
    p.add_argument("--store", metavar="PATH", help="subscriber store (default: $DIGEST_STORE or "
                                                   "var/subscribers.sqlite3)")
    p.add_argument("--config", type=Path, metavar="FILE")
    p.set_defaults(func=cmd_bounces)

    p = sub.add_parser("serve", help="run the subscription service (subscribe, confirm, topics, unsubscribe)",
                       description="Serve the subscription pages and the one-click unsubscribe endpoint the "
                                   "digest's emails link to. Settings from DIGEST_SERVE_HOST/PORT, "
                                   "DIGEST_BASE_URL (the public URL), DIGEST_SECRET, DIGEST_STORE (a SQLite "
                                   "path or postgresql://...), or [serve] in the config file; with none, it "
                                   "listens on 127.0.0.1:8470 with a secret generated into var/serve-secret. "
                                   "Confirmation emails go to outbox/confirmations/ unless --mail smtp.")
    p.add_argument("--host", help="address to listen on (default: $DIGEST_SERVE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $DIGEST_SERVE_PORT or 8470)")
    p.add_argument("--mail", choices=("outbox", "smtp"), help="where confirmation emails go (default: outbox)")
    p.add_argument("--store", metavar="PATH", help="subscriber store (default: $DIGEST_STORE or "
                                                   "var/subscribers.sqlite3)")
    p.add_argument("--check", action="store_true",
                   help="say what is wrong with the settings, secret, store and mail relay (EHLO only, no mail), "
                        "in English and Korean, and exit (0: ready); changes nothing, prints no secret")
    _mail_args(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DigestError as exc:
        print(f"digest {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `digest schema | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line, keep the traceback for DIGEST_DEBUG
        if os.environ.get("DIGEST_DEBUG"):
            raise
        print(f"digest {args.command}: internal error ({type(exc).__name__}: {exc}); "
              "please report it, and rerun with DIGEST_DEBUG=1 for details", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
