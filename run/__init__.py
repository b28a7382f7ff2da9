"""The composition root: the command line and the wiring of one process.

It sits above both packages: it imports the engine (`dispatcher`) and the REST app (`api`)
directly, so every arrow between them is one a static tool can check, and neither package
imports this one.
"""
