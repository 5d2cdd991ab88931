"""HTTP only: the Starlette app (:func:`digestd.web.app.create_app`) whose routes translate
requests into calls of the packages below; reader pages, the admin page and API, health;
and the server that runs it (web/server.py: uvicorn, with web/connections.py's limits).

May import: anything below it.
"""
