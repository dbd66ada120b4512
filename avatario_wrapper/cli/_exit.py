"""The ``avatario`` command's exit codes, one table for every subcommand.

0 success · 1 anything else (contract-test: an answer broke the contract) · 2 usage ·
3 bad input or configuration · 4 connection failed · 5 timed out · 6 Avatario refused the
request (4xx; contract-test: every answer was 401 or 403) · 7 Avatario failed (5xx) ·
8 a 2xx with an invalid body · 9 (contract-test) a session may have started
"""

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_CONNECTION = 4
EXIT_TIMEOUT = 5
EXIT_REFUSED = 6
EXIT_SERVER = 7
EXIT_INVALID_RESPONSE = 8
EXIT_MAY_HAVE_STARTED = 9
