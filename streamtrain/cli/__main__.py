"""``python -m streamtrain.cli ...`` runs the console script."""

from streamtrain.cli import console_main

console_main()
