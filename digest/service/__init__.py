"""The subscription service, a product: `digest serve`, an ASGI app over the store.

    HTTP ──server──▶ app ──▶ digest.subscribers store
                         └──▶ mail (confirmation messages)

``server`` is uvicorn with the limits it lacks (header and body timeouts, a connection cap) and
logs a client cannot flood; ``app`` the routes (form, confirm link, preferences, one-click).

It renders the subscribe form that the site embeds (through digest.pipeline.publish) and
never imports the site.
"""
