"""User-facing errors.

A :class:`NolabelError` means the *user* asked for something that cannot be done
(a wrong path, K larger than N, an unknown backbone). The CLI prints its message on
one line and exits with status 2, without a traceback. Programming errors stay
ordinary exceptions.
"""


class NolabelError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def check_choice(what: str, value, choices) -> None:
    """Raise ``unknown WHAT 'value'; choose one of a, b, c`` unless ``value`` is in ``choices``."""
    if value not in choices:
        raise NolabelError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
