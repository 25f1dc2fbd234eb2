"""Typed, torch-free schemas that every floor reads: the methods' names, parameters and rules
(`methods.py`) and the loss names (`losses.py`). Nothing here imports torch or a samcli module above
`errors.py`, so validating a config never loads the engine."""
