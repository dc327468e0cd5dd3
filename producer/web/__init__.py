"""The read-only web view: ``triplets web`` (docs/web.md).

Nothing is imported here: ``producer.web.serve`` must load without the ``web`` extra, so that
``triplets web`` can name the missing extra instead of failing on an import.
The app factory is ``producer.web.app.create_app``.
"""
