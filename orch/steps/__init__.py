"""The built-in steps of the pipeline: the actions that rules name."""
