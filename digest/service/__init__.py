"""The subscription service, a product: `digest serve`, an ASGI app over the store.

    HTTP (form, confirm link, preferences, one-click) ──app──▶ digest.subscribers store
                                                          └──▶ mail (confirmation messages)

It renders the subscribe form that the site embeds (through digest.pipeline.publish) and
never imports the site.
"""
