"""HTTP only: the Starlette app (:func:`digestd.web.app.create_app`) whose routes translate
requests into calls of the packages below; reader pages, the admin page and API, health.

May import: anything below it.
"""
