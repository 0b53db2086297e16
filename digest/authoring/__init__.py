"""Help for a contributor writing a note: `digest new` and `digest links`.

    --arxiv/--url ──metadata──▶ title, authors, date ──authors──▶ people ids ──new──▶ a note
    notes' external links ──links──▶ a report of broken and moved ones (file:line)

It reads content (the model, the YAML reader) and renders nothing for readers.
"""
