"""`python -m dexstack.cli` = the `dexstack` command."""

from dexstack.cli import main

main()
