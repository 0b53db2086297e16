"""The weekly email, a product: one ISO week's notes → one message per subscriber, sent once.

    Content ──compose──▶ Issue ──message──▶ MessageTemplate ──deliver──▶ SMTP / outbox/
                                  (headers, MIME, DKIM)      (ledger in digest.subscribers:
                                                              exactly once, resumable)
    bounce mailbox (IMAP, Maildir) ──bounces──▶ suppressions, unsubscribes in digest.subscribers

It never imports the site: the issue's web pages go to the site through digest.pipeline.
"""
