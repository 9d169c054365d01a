"""The base class of every error a user can cause (a bad file, key, value or argument): the CLI
prints its message as one line and exits with status 2. Light on purpose — catching it imports
nothing else (no torch, no Ray)."""


class UserError(Exception):
    """Bad input, said in one line: the file, the key, the allowed values."""


__all__ = ["UserError"]
