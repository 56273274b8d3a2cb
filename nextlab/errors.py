"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a one-line `error: ...` and a non-zero exit; everything
else is a bug and keeps its traceback.
"""


class NextlabError(Exception):
    """Bad input: a missing file, a wrong config value, a corrupt checkpoint."""
