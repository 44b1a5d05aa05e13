"""The one exception family that the CLI turns into a single stderr line and exit code 2."""


class DrumdiffError(Exception):
    """A problem with the user's input (a file, a value, a folder): the message names it."""


class AudioError(DrumdiffError):
    """An audio file that cannot be read, written or used; the message names the file and the problem."""


class ModelFileError(DrumdiffError):
    """A model or checkpoint file that cannot be loaded; the message names the file and the problem."""
