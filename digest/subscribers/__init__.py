"""Who gets the digest: subscribers, confirmations and the delivery ledger, in one store.

    SubscriberStore (SQLite by default, PostgreSQL for several processes)
        ▲ mail.deliver (claims, ledger)        ▲ service (sign-ups, confirm, unsubscribe)

Below both products that use it; it imports neither, nor the site.
"""
