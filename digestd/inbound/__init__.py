"""Mail in: an LMTP listener (``DIGESTD_INBOUND_LISTEN``) to which the operator's MTA hands
the VERP bounce addresses, the complaints address and readers' personal ``mailto:``
unsubscribe addresses (:mod:`digestd.inbound.lmtp`; which addresses are served:
:mod:`digestd.inbound.addresses`). What a message means is decided by ``readers``.

May import: anything below it (like ``web``).
"""
