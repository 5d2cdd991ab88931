"""Articles in: the site's categories, article validation and storage, RSS/Atom feeds.

May import: the top level (config, db, models, errors).
"""
