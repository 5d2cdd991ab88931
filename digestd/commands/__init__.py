"""The commands of ``digestd`` (one module per thing they act on: articles, subscribers,
feeds, editions); :mod:`digestd.cli` parses the arguments and imports only the module of
the command it runs, so every command starts quickly.

Each command takes the settings and its parsed arguments and returns the exit code;
DigestdError subclasses carry the one line an operator reads (see ``digestd.cli.main``).
"""
