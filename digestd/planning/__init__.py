"""When and what: the schedule and the article selection (both pure), and the planner that
writes editions, digests and queue rows (in a helper process when there is a spare core).

May import: the top level, ``content`` and ``mail``.
"""
