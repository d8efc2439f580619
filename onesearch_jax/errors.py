"""The error a user can fix: a bad flag, file or gin binding.

``onesearch_jax.main`` prints a ``UserError`` as its message alone on stderr
(one line, exit status 2); any other exception is a bug and keeps its
traceback. Validation code raises it, and the command line converts the
known user-input failures (gin parse errors, world schema errors, request
file errors) into it at its edge.
"""

from __future__ import annotations


class UserError(ValueError):
  """Input the user gave is wrong; the message says where and how."""
