"""The exception types the command line prints as one line (no traceback) and exits with status 2.

Library callers catch them like any ValueError.
"""


class UserError(ValueError):
    """A mistake in what the user asked for, with a message that says how to fix it."""


class NonFiniteLoss(UserError):
    """A run stopped because its loss was not finite; the message names the last good checkpoint."""
