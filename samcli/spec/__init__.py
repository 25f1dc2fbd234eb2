"""Typed, torch-free descriptions at the bottom of the house, read by every floor: what a measurement
is and the notion registry (`measure.py`), the methods' names, parameters and rules (`methods.py`)
and the loss names (`losses.py`). Nothing here imports torch or a samcli module above `errors.py`,
so validating a config never loads the engine."""
