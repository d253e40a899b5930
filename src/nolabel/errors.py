"""User-facing errors.

A :class:`NolabelError` means the *user* asked for something that cannot be done
(a wrong path, K larger than N, an unknown backbone). The CLI prints its message on
one line and exits with status 2, without a traceback. Programming errors stay
ordinary exceptions.
"""


class NolabelError(Exception):
    """A problem with the user's input or environment, explained in one line."""
