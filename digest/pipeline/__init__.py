"""The stages in order, over the products: what `digest check` and `digest build` run.

    check     load → validate → check references: CheckResult (every problem in one pass)
    publish   what the site shows from mail and the service (issue pages, feed, the form)
    build     refresh stale quick references → check → site (through the engine adapter the
              caller passes) → this week's issue into outbox/

It sits above the products so that they need not know each other.
"""
