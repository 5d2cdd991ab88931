"""Subscribers and their lifecycle: preferences, signup, confirmation, muting a category,
unsubscribe, erasure, suppression, bounce and complaint reports, CSV import and export.

May import: the top level, ``content``, ``mail`` and ``planning`` (the schedule).
"""
