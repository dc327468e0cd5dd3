"""Pure data and persistence: settings, errors, triplets, prompt, parser, tables, store.

Nothing in this package imports torch or celery.
"""
