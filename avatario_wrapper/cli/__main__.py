"""``python -m avatario_wrapper.cli``: the ``avatario`` command."""

from . import main

main()
