"""Errors that reach the user as one clear line."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix. Exit status 2."""
