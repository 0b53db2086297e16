"""Stages 1 and 2, the content: YAML files in → typed records out, every problem in one pass.

    content/notes/<yyyy>/<slug>.yml ─┐
    content/tags.yml, people.yml  ───┼─ yamlread ─▶ load ─▶ RawContent (marked nodes)
    content/refs/<name>/ref.yml   ───┘                          │
                                                    validate ◀──┘ (+ directives in bodies)
                                                        │
                                                        ▼
                               model: Content (Note, Tag, Person, RefManifest), Diagnostics

``schema`` writes the same rules as JSON Schema for editors. Nothing here runs code, renders
or sends: every later stage imports this package, and it imports none of them.
"""
