"""`python -m flourish.cli`: the `flourish` command without its console script."""

from flourish.cli import main

main()
