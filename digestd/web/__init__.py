"""The HTTP side of digestd: reader pages (signup, confirm, preferences, unsubscribe, view),
the admin API and the development mailbox. :func:`create_app` builds it from a Service."""

from digestd.web.app import create_app

__all__ = ["create_app"]
