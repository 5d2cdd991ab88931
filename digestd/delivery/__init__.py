"""Claim → send → record: the sender loop, the queue store, the outcome recorder, the SMTP
pool and its pipelined sessions, sending limits.

May import: the top level, ``mail`` and ``readers`` (suppression).
"""
