"""Claim → send → record: the sender loop, the queue store, the outcome recorder, the SMTP
pool and its pipelined sessions, sending limits.

May import: the top level, ``mail``, ``readers`` (suppression) and ``planning`` (how late
an edition may go out, and the words of a skip).
"""
