"""The `digest` command: a thin adapter from arguments to the pipeline's functions.

Every failure the user can act on is a DigestError and prints as one message;
a bug prints one line asking for a report (set DIGEST_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import DigestError, UsageError

DEFAULT_CONTENT = Path("content")


def _content_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--content", type=Path, default=DEFAULT_CONTENT, metavar="DIR",
                        help="content folder (default: ./content)")


def cmd_check(args) -> int:
    from .check import check

    result = check(args.content, args.paths)
    github = args.github or os.environ.get("GITHUB_ACTIONS") == "true"
    for line in result.lines(github=github):
        print(line)
    return 0 if result.ok else 1


def cmd_schema(args) -> int:
    from .schema import all_schemas

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
    from .new import new_note_from_args

    path = new_note_from_args(args)
    print(f"created {path}")
    print(f"next: edit it, then run `digest check {path}`")
    return 0


def cmd_build(args) -> int:
    from .build import build

    build(args.content, site_dir=args.site_dir, outbox=args.outbox)
    return 0


def _selected_refs(args):
    from .refs import load_references

    refs = load_references(args.content)
    unknown = [n for n in args.names if n not in refs]
    if unknown:
        raise UsageError(f"unknown reference(s): {', '.join(unknown)}; known: {', '.join(refs) or 'none'}")
    return [refs[n] for n in (args.names or refs)]


def cmd_refs_run(args) -> int:
    from .refs import run_reference

    for ref in _selected_refs(args):
        run_reference(ref, args.profile, resume=args.resume, timeout=args.timeout)
    return 0


def cmd_refs_verify(args) -> int:
    from .refs import drift_table, verify

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
    from .refs import is_fresh

    for ref in _selected_refs(args):
        for profile in ref.manifest.profiles:
            result = ref.results.get(profile)
            if result is None:
                state = "no results"
            else:
                state = ("fresh" if is_fresh(ref, profile) else "STALE") + f", finished {result.finished}"
            print(f"{ref.name:<20} {profile:<6} {state}")
    return 0


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
    p.add_argument("--github", action="store_true",
                   help="also print GitHub Actions annotations (automatic when GITHUB_ACTIONS=true)")
    _content_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("schema", help="print the JSON Schema of notes (for editors)",
                       description="Print the JSON Schema generated from the content model.")
    p.add_argument("which", nargs="?", default="note", choices=("note", "tags", "people"))
    p.add_argument("--write", type=Path, metavar="DIR", help="write all schemas into DIR instead")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new", help="create a new note from flags or questions",
                       description="Create content/notes/<yyyy>/<slug>.yml. Missing values are asked "
                                   "for when a terminal is attached; the result passes `digest check`.")
    p.add_argument("--title", help="Korean title")
    p.add_argument("--kind", help="paper, qa, tutorial, course, event, news or translation")
    p.add_argument("--tag", action="append", default=[], metavar="ID", help="tag id (repeatable)")
    p.add_argument("--person", action="append", default=[], metavar="ID", help="person id (repeatable)")
    p.add_argument("--source", action="append", default=[], metavar="URL", help="source link (repeatable)")
    p.add_argument("--slug", help="URL name (default: romanized from the title)")
    p.add_argument("--date", help="YYYY-MM-DD (default: today in Seoul)")
    p.add_argument("--summary", help="one or two sentences")
    p.add_argument("--no-input", action="store_true", help="never ask; fail on missing values")
    _content_arg(p)
    p.set_defaults(func=cmd_new)

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
    _content_arg(p)
    p.set_defaults(func=cmd_refs_run)
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
