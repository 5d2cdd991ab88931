"""Turning a digest into bytes: presentation, MJML rendering, MIME templates with
per-recipient substitution, DKIM.

May import: the top level and ``content`` (category names).
"""
